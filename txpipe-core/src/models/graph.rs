//! Dependency order of models: a topological sort that names cycles and
//! unknown refs.

use std::collections::{BTreeMap, BTreeSet};

use super::model::Model;
use crate::error::{Error, Result};

/// Orders all `models` so that each comes after the models it refs.
///
/// # Errors
/// A ref to a model that does not exist, or a cycle (the error lists it).
pub fn order(models: &[Model]) -> Result<Vec<String>> {
    let by_name: BTreeMap<&str, &Model> = models.iter().map(|m| (m.name.as_str(), m)).collect();
    for m in models {
        for r in &m.refs {
            if !by_name.contains_key(r.as_str()) {
                return Err(Error::Project(format!(
                    "model {} refs '{r}', which is not a model (known: {})",
                    m.name,
                    by_name.keys().copied().collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    // Depth-first with colours; the path is kept to report a cycle.
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    for m in models {
        let mut path: Vec<&str> = Vec::new();
        visit(m.name.as_str(), &by_name, &mut done, &mut path, &mut out)?;
    }
    Ok(out)
}

fn visit<'a>(
    name: &'a str,
    by_name: &BTreeMap<&'a str, &'a Model>,
    done: &mut BTreeSet<&'a str>,
    path: &mut Vec<&'a str>,
    out: &mut Vec<String>,
) -> Result<()> {
    if done.contains(name) {
        return Ok(());
    }
    if let Some(at) = path.iter().position(|p| *p == name) {
        let mut cycle: Vec<&str> = path[at..].to_vec();
        cycle.push(name);
        return Err(Error::Project(format!(
            "models form a cycle: {}",
            cycle.join(" -> ")
        )));
    }
    path.push(name);
    if let Some(m) = by_name.get(name) {
        for r in &m.refs {
            visit(r.as_str(), by_name, done, path, out)?;
        }
    }
    path.pop();
    done.insert(name);
    out.push(name.to_string());
    Ok(())
}

/// The models `selected` need (themselves and everything upstream), in order.
pub fn upstream_closure(
    models: &[Model],
    ordered: &[String],
    selected: &BTreeSet<String>,
) -> BTreeSet<String> {
    let by_name: BTreeMap<&str, &Model> = models.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut need: BTreeSet<String> = selected.clone();
    for name in ordered.iter().rev() {
        if need.contains(name) {
            if let Some(m) = by_name.get(name.as_str()) {
                need.extend(m.refs.iter().cloned());
            }
        }
    }
    need
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, sql: &str) -> Model {
        Model::parse(name, sql).unwrap()
    }

    #[test]
    fn orders_dependencies_first() {
        let models = vec![
            m("c", "SELECT * FROM {{ ref('b') }} JOIN {{ ref('a') }}"),
            m("b", "SELECT * FROM {{ ref('a') }}"),
            m("a", "SELECT 1"),
        ];
        assert_eq!(order(&models).unwrap(), vec!["a", "b", "c"]);
        let need = upstream_closure(&models, &order(&models).unwrap(), &["b".to_string()].into());
        assert_eq!(need, ["a".to_string(), "b".to_string()].into());
    }

    #[test]
    fn names_cycles_and_unknown_refs() {
        let cyclic = vec![
            m("a", "SELECT * FROM {{ ref('c') }}"),
            m("b", "SELECT * FROM {{ ref('a') }}"),
            m("c", "SELECT * FROM {{ ref('b') }}"),
        ];
        let e = order(&cyclic).unwrap_err().to_string();
        assert!(e.contains("cycle: a -> c -> b -> a"), "{e}");
        let missing = vec![m("a", "SELECT * FROM {{ ref('nope') }}")];
        let e = order(&missing).unwrap_err().to_string();
        assert!(e.contains("model a refs 'nope'"), "{e}");
    }
}
