//! Unknown keys: everything in the merged table that no reader asked for, refused with the
//! closest known key as a suggestion (a typo surfaces instead of being ignored).

use super::*;

impl Loader<'_> {
    /// Everything in the merged table that no reader asked for, once per place it was
    /// set (file and/or environment variable), sorted.
    pub(super) fn unknown_keys(&self) -> Vec<String> {
        let sections: BTreeSet<&str> = self
            .known
            .iter()
            .filter_map(|key| key.split_once('.'))
            .map(|(section, _)| section)
            .collect();
        let mut unknown = BTreeSet::new();
        for (section, value) in &self.merged {
            if !sections.contains(section.as_str()) {
                // A key written outside its section gets its full name as the hint.
                let hint = suggestion(section, sections.iter().copied()).or_else(|| {
                    self.known
                        .iter()
                        .find(|key| key.split_once('.').is_some_and(|(_, name)| name == section))
                        .map(|key| (*key).to_string())
                });
                let kind = if matches!(value.kind, ValueKind::Table(_)) {
                    Unknown::Section
                } else {
                    Unknown::Key
                };
                unknown.insert((section.clone(), kind, hint));
                continue;
            }
            let ValueKind::Table(table) = &value.kind else {
                unknown.insert((section.clone(), Unknown::NotASection, None));
                continue;
            };
            for name in table.keys() {
                let key = format!("{section}.{name}");
                if !self.known.contains(key.as_str()) {
                    let hint = suggestion(&key, self.known.iter().copied());
                    unknown.insert((key, Unknown::Key, hint));
                }
            }
        }
        let mut problems = Vec::new();
        for (key, kind, hint) in unknown {
            let below = format!("{key}.");
            let mut places: Vec<String> = self
                .env
                .iter()
                .filter(|(_, path, _)| *path == key || path.starts_with(&below))
                .map(|(name, _, _)| (*name).to_string())
                .collect();
            if kind == Unknown::NotASection {
                // Only the environment can replace a whole section by one value; the
                // file would have failed as TOML or been a table.
                if places.is_empty() {
                    places.push(self.file.display().to_string());
                }
                for place in places {
                    problems.push(format!(
                        "{key} in {place}: expected a section of keys, not a single value"
                    ));
                }
                continue;
            }
            if self.in_file(&key) || places.is_empty() {
                places.push(self.file.display().to_string());
            }
            let what = if kind == Unknown::Section {
                "section"
            } else {
                "key"
            };
            let hint = hint
                .map(|hint| format!(" (did you mean {hint:?}?)"))
                .unwrap_or_default();
            for place in places {
                problems.push(format!("unknown {what} {key:?} in {place}{hint}"));
            }
        }
        problems
    }
}

/// The candidate closest to `unknown` when it is close enough to be a typo.
fn suggestion<'a>(unknown: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let unknown = unknown.to_lowercase();
    candidates
        .map(|candidate| (edit_distance(&unknown, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 5))
        .min()
        .map(|(_, candidate)| candidate.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            let insert = current[j] + 1;
            let delete = previous[j + 1] + 1;
            current.push(substitute.min(insert).min(delete));
        }
        previous = current;
    }
    previous[b.len()]
}
