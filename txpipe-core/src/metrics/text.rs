//! Prometheus text exposition format (version 0.0.4), written by hand: a few
//! families of counters, gauges and histograms need no client library.

use std::fmt::Write;

/// Builds one exposition document.
#[derive(Debug, Default)]
pub struct PromText {
    out: String,
}

/// Escapes a label value (`\`, `"` and newlines).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Formats a sample value the way Prometheus parses it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl PromText {
    /// Starts a metric family: `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, label_pairs: &[(&str, &str)], value: f64) -> &mut Self {
        let _ = writeln!(self.out, "{name}{} {}", labels(label_pairs), number(value));
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A histogram family's samples: cumulative buckets, `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, help: &str, h: &super::HistogramSnapshot) -> &mut Self {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (le, n) in h.bounds.iter().zip(&h.counts) {
            cumulative += n;
            self.sample(&bucket, &[("le", &number(*le))], cumulative as f64);
        }
        let total = h.count();
        self.sample(&bucket, &[("le", "+Inf")], total as f64);
        self.sample(&format!("{name}_sum"), &[], h.sum);
        self.sample(&format!("{name}_count"), &[], total as f64)
    }

    /// The finished document.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_families_labels_and_numbers() {
        let mut t = PromText::default();
        t.single("a_total", "counter", "An a.", 3.0);
        t.family("b", "gauge", "A b.")
            .sample("b", &[("rule", "say \"hi\"\\")], 0.5);
        let s = t.finish();
        assert_eq!(
            s,
            "# HELP a_total An a.\n# TYPE a_total counter\na_total 3\n\
             # HELP b A b.\n# TYPE b gauge\nb{rule=\"say \\\"hi\\\"\\\\\"} 0.5\n"
        );
    }
}
