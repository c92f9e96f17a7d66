//! A models project: `models/*.sql`, `tests.toml` and `tests/*.sql`, from a
//! folder or built into the binary.

use std::path::Path;

use super::datatest::{parse_singular, parse_tests_toml, DataTest};
use super::graph;
use super::model::Model;
use crate::error::{Error, Result};

/// The project shipped in the workspace's `sql/` folder, compiled in.
const BUILTIN_MODELS: &[(&str, &str)] = &[
    (
        "int_duplicate_hashes",
        include_str!("../../../sql/models/int_duplicate_hashes.sql"),
    ),
    (
        "duplicate_transactions",
        include_str!("../../../sql/models/duplicate_transactions.sql"),
    ),
    (
        "int_transactions",
        include_str!("../../../sql/models/int_transactions.sql"),
    ),
    (
        "int_merchant_daily",
        include_str!("../../../sql/models/int_merchant_daily.sql"),
    ),
    (
        "int_customer_daily",
        include_str!("../../../sql/models/int_customer_daily.sql"),
    ),
    (
        "stg_transactions",
        include_str!("../../../sql/models/stg_transactions.sql"),
    ),
    (
        "daily_sales_summary",
        include_str!("../../../sql/models/daily_sales_summary.sql"),
    ),
    (
        "customer_kpis",
        include_str!("../../../sql/models/customer_kpis.sql"),
    ),
    (
        "merchant_analytics",
        include_str!("../../../sql/models/merchant_analytics.sql"),
    ),
    (
        "category_analytics",
        include_str!("../../../sql/models/category_analytics.sql"),
    ),
    (
        "country_analytics",
        include_str!("../../../sql/models/country_analytics.sql"),
    ),
    (
        "fraud_by_rule",
        include_str!("../../../sql/models/fraud_by_rule.sql"),
    ),
];
const BUILTIN_TESTS: &str = include_str!("../../../sql/tests.toml");
const BUILTIN_SINGULAR: &[(&str, &str)] = &[
    (
        "revenue_reconciles",
        include_str!("../../../sql/tests/revenue_reconciles.sql"),
    ),
    (
        "fraud_not_above_total",
        include_str!("../../../sql/tests/fraud_not_above_total.sql"),
    ),
];

/// Models in dependency order plus data tests.
#[derive(Debug, Clone)]
pub struct Project {
    /// Where it came from (a folder or "built-in").
    pub origin: String,
    /// Models, dependencies first.
    pub models: Vec<Model>,
    /// Declared and singular tests.
    pub tests: Vec<DataTest>,
}

impl Project {
    /// The built-in project (the workspace's `sql/` folder at build time).
    ///
    /// # Errors
    /// Only if the shipped files are broken (caught by the crate's tests).
    pub fn builtin() -> Result<Self> {
        let models = BUILTIN_MODELS
            .iter()
            .map(|(n, s)| Model::parse(n, s))
            .collect::<Result<Vec<_>>>()?;
        let mut tests = parse_tests_toml("built-in tests.toml", BUILTIN_TESTS)?;
        for (n, s) in BUILTIN_SINGULAR {
            tests.push(parse_singular(n, s)?);
        }
        Self::assemble("built-in".into(), models, tests)
    }

    /// Loads `dir/models/*.sql`, `dir/tests.toml` (optional) and `dir/tests/*.sql` (optional).
    ///
    /// # Errors
    /// The folder has no models, a file cannot be read, or a model or test is
    /// malformed (the error names it), or the models form a cycle.
    pub fn load(dir: &Path) -> Result<Self> {
        let models_dir = dir.join("models");
        let mut models = Vec::new();
        for (name, text) in sql_files(&models_dir)? {
            models.push(Model::parse(&name, &text)?);
        }
        if models.is_empty() {
            return Err(Error::Project(format!(
                "no models: {} has no .sql files",
                models_dir.display()
            )));
        }
        let mut tests = Vec::new();
        let toml_path = dir.join("tests.toml");
        if toml_path.exists() {
            let text = std::fs::read_to_string(&toml_path)
                .map_err(|e| Error::io("reading", &toml_path, e))?;
            tests = parse_tests_toml(&toml_path.display().to_string(), &text)?;
        }
        let singular_dir = dir.join("tests");
        if singular_dir.is_dir() {
            for (name, text) in sql_files(&singular_dir)? {
                tests.push(parse_singular(&name, &text)?);
            }
        }
        Self::assemble(dir.display().to_string(), models, tests)
    }

    fn assemble(origin: String, models: Vec<Model>, tests: Vec<DataTest>) -> Result<Self> {
        let order = graph::order(&models)?;
        let mut sorted = Vec::with_capacity(models.len());
        for name in &order {
            if let Some(m) = models.iter().find(|m| &m.name == name) {
                sorted.push(m.clone());
            }
        }
        let mut names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Project(format!("two tests are named {}", w[0])));
        }
        Ok(Project {
            origin,
            models: sorted,
            tests,
        })
    }

    /// The model called `name`.
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }
}

/// `(stem, contents)` of every `.sql` file in `dir`, by name.
fn sql_files(dir: &Path) -> Result<Vec<(String, String)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io("listing", dir, e))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("sql") {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
        out.push((stem, text));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_project_parses_in_dependency_order() {
        let p = Project::builtin().unwrap();
        assert_eq!(p.models[0].name, "int_duplicate_hashes");
        assert_eq!(p.models.len(), BUILTIN_MODELS.len());
        assert!(p.tests.len() > 20);
    }

    #[test]
    fn the_workspace_sql_folder_is_the_builtin_project() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
        let on_disk = Project::load(&dir).unwrap();
        let builtin = Project::builtin().unwrap();
        let names = |p: &Project| {
            p.models
                .iter()
                .map(|m| m.name.clone())
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(
            names(&on_disk),
            names(&builtin),
            "every sql/models file is built in"
        );
        assert_eq!(on_disk.tests.len(), builtin.tests.len());
    }
}
