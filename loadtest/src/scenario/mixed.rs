//! The `mixed` scenario: a weighted blend of the others, given as `ping=8,idle=1,login-storm=1`.
//! Clients are assigned kinds by smooth weighted round robin, so any prefix of the clients (the
//! ramp-up order) has the blend's proportions, and `login-storm=200,ping=100` with 300 clients
//! gives exactly 200 and 100.

use super::ScenarioKind;

/// Scenario kinds with weights; a single scenario is a blend of one.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    entries: Vec<(ScenarioKind, u32)>,
}

impl Mix {
    /// One scenario alone.
    pub fn single(kind: ScenarioKind) -> Mix {
        Mix { entries: vec![(kind, 1)] }
    }

    /// Parses `ping`, or `ping=8,idle=1,login-storm=1` (a missing weight is 1).
    ///
    /// # Errors
    /// An unknown scenario name, a bad weight, or no positive weight at all.
    pub fn parse(spec: &str) -> Result<Mix, String> {
        let mut entries = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|part| !part.is_empty()) {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let kind = ScenarioKind::from_name(name).ok_or_else(|| {
                let known: Vec<_> = ScenarioKind::ALL.iter().map(|kind| kind.name()).collect();
                format!("unknown scenario {name:?} (known: {})", known.join(", "))
            })?;
            let weight: u32 =
                weight.trim().parse().map_err(|_| format!("bad weight {weight:?} for {name}"))?;
            if weight > 0 {
                entries.push((kind, weight));
            }
        }
        if entries.is_empty() {
            return Err(format!("no scenario with a positive weight in {spec:?}"));
        }
        Ok(Mix { entries })
    }

    /// The kinds in the blend.
    pub fn kinds(&self) -> impl Iterator<Item = ScenarioKind> + '_ {
        self.entries.iter().map(|(kind, _)| *kind)
    }

    /// The blend as it would be written on the command line.
    pub fn name(&self) -> String {
        match self.entries.as_slice() {
            [(kind, _)] => kind.name().to_owned(),
            entries => {
                let parts: Vec<_> =
                    entries.iter().map(|(kind, weight)| format!("{}={weight}", kind.name())).collect();
                format!("mixed({})", parts.join(","))
            }
        }
    }

    /// The kind of each of `n_clients` clients, in client order.
    pub fn assign(&self, n_clients: usize) -> Vec<ScenarioKind> {
        let total: i64 = self.entries.iter().map(|(_, weight)| i64::from(*weight)).sum();
        let mut credit = vec![0_i64; self.entries.len()];
        (0..n_clients)
            .map(|_| {
                for (credit, (_, weight)) in credit.iter_mut().zip(&self.entries) {
                    *credit += i64::from(*weight);
                }
                let chosen =
                    (0..credit.len()).max_by_key(|&i| (credit[i], std::cmp::Reverse(i))).unwrap_or(0);
                credit[chosen] -= total;
                self.entries[chosen].0
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(kinds: &[ScenarioKind], kind: ScenarioKind) -> usize {
        kinds.iter().filter(|k| **k == kind).count()
    }

    #[test]
    fn weights_split_clients_exactly() {
        let mix = Mix::parse("login-storm=200,ping=100").expect("parse");
        let kinds = mix.assign(300);
        assert_eq!(count(&kinds, ScenarioKind::LoginStorm), 200);
        assert_eq!(count(&kinds, ScenarioKind::Ping), 100);
        let kinds = Mix::parse("ping=8,idle=1,login-storm=1").expect("parse").assign(10);
        assert_eq!(count(&kinds, ScenarioKind::Ping), 8);
        assert_eq!(count(&kinds, ScenarioKind::Idle), 1);
    }

    #[test]
    fn unknown_names_and_empty_blends_are_refused() {
        assert!(Mix::parse("pong=1").is_err());
        assert!(Mix::parse("ping=0").is_err());
        assert!(Mix::parse("ping=x").is_err());
        assert_eq!(Mix::parse("idle").expect("parse"), Mix::single(ScenarioKind::Idle));
    }
}
