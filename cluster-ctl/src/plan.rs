//! A plan: the typed list of steps a subcommand will take, each with why it runs. `--dry-run` prints
//! it (human or JSON) instead of applying it; the apply path walks the same list.

use serde::Serialize;

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Short stable id, e.g. `apply-share-a`.
    pub id: String,
    /// What is done: a command line (secrets hidden) or an API operation.
    pub action: String,
    /// Why the step runs.
    pub why: String,
}

impl Step {
    pub fn new(id: &str, action: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            id: id.to_owned(),
            action: action.into(),
            why: why.into(),
        }
    }
}

/// The steps of one subcommand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub command: String,
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn new(command: &str) -> Self {
        Self {
            command: command.to_owned(),
            steps: Vec::new(),
        }
    }

    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// Numbered, one step per line plus its reason.
    pub fn human(&self) -> String {
        let mut out = format!("plan for `cluster-ctl {}`:\n", self.command);
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!(
                "{:>2}. [{}] {}\n      why: {}\n",
                i + 1,
                s.id,
                s.action,
                s.why
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_lists_each_step_with_why() {
        let mut p = Plan::new("cleanup");
        p.push(Step::new(
            "delete-pods",
            "DELETE pods -l x=y",
            "remove lab pods",
        ));
        let text = p.human();
        assert!(
            text.contains(" 1. [delete-pods] DELETE pods -l x=y"),
            "{text}"
        );
        assert!(text.contains("why: remove lab pods"), "{text}");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["steps"][0]["id"], "delete-pods");
    }
}
