//! What a reader skipped or changed, for the caller to print.

use std::fmt;

/// Items a reader skipped or changed instead of failing, counted by reason, with a few
/// examples each (file names, image and annotation ids) so the report can name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetReport {
    entries: Vec<(String, usize, Vec<String>)>,
}

/// How many examples each reason keeps.
const EXAMPLES: usize = 3;

impl DatasetReport {
    /// Counts one item under `reason` (for example "annotations with an unknown category id"),
    /// with `example` naming it.
    pub fn add(&mut self, reason: &str, example: impl fmt::Display) {
        let i = self.entry(reason);
        let entry = &mut self.entries[i];
        entry.1 += 1;
        if entry.2.len() < EXAMPLES {
            entry.2.push(example.to_string());
        }
    }

    /// How many items were counted under `reason` (0 if none).
    pub fn count(&self, reason: &str) -> usize {
        self.entries
            .iter()
            .find(|(r, _, _)| r == reason)
            .map_or(0, |e| e.1)
    }

    /// Whether nothing was skipped or changed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds the counts and examples of `other` to this report.
    pub fn merge(&mut self, other: &DatasetReport) {
        for (reason, count, examples) in &other.entries {
            let i = self.entry(reason);
            let entry = &mut self.entries[i];
            entry.1 += count;
            let room = EXAMPLES.saturating_sub(entry.2.len());
            entry.2.extend(examples.iter().take(room).cloned());
        }
    }

    /// The index of `reason`'s entry, made empty if new.
    fn entry(&mut self, reason: &str) -> usize {
        match self.entries.iter().position(|(r, _, _)| r == reason) {
            Some(i) => i,
            None => {
                self.entries.push((reason.to_string(), 0, Vec::new()));
                self.entries.len() - 1
            }
        }
    }

    /// The reasons with their counts and examples, in the order first seen.
    pub fn entries(&self) -> impl Iterator<Item = (&str, usize, &[String])> {
        self.entries
            .iter()
            .map(|(r, c, e)| (r.as_str(), *c, e.as_slice()))
    }
}

/// One line per reason: `skipped 3 annotations with an unknown category id (e.g. 12, 15, 19)`.
impl fmt::Display for DatasetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (reason, count, examples)) in self.entries().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{count} {reason}")?;
            if !examples.is_empty() {
                let more = if count > examples.len() { ", ..." } else { "" };
                write!(f, " (e.g. {}{more})", examples.join(", "))?;
            }
        }
        Ok(())
    }
}
