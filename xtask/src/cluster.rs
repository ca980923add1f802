//! What most subcommands start from: the project, the recorded cluster and its runtime.

use lab::project::Project;
use lab::runtime::{self, MemberStatus, Runtime};
use lab::state::{MemberState, State, Target};
use xshell::Shell;

/// A cluster started from this checkout, with the runtime it runs on.
pub struct Cluster {
    pub project: Project,
    pub state: State,
    pub runtime: Box<dyn Runtime>,
}

impl Cluster {
    /// The recorded cluster, or one line saying how to start one.
    pub fn open() -> anyhow::Result<Cluster> {
        let project = Project::locate()?;
        let state = State::require(&project.cluster_dir)?;
        let runtime = runtime::of(state.runtime, &project);
        Ok(Cluster {
            project,
            state,
            runtime,
        })
    }

    /// The member `target` names (a copy, so the state can change meanwhile).
    pub fn member(&self, target: Target) -> anyhow::Result<MemberState> {
        self.state.member(target).cloned()
    }

    /// What member `index` is doing now.
    pub fn status(&self, sh: &Shell, index: u16) -> anyhow::Result<MemberStatus> {
        let statuses = self.runtime.statuses(sh, &self.state)?;
        Ok(runtime::status_of(&self.state, &statuses, index))
    }

    /// Writes `state.json` and `cluster.toml`.
    pub fn save(&self) -> anyhow::Result<()> {
        self.state.save(&self.project.cluster_dir)
    }
}

/// How a target is typed on the command line: `3` or `canonical`.
pub fn target_word(target: Target) -> String {
    match target {
        Target::Canonical => "canonical".to_string(),
        Target::Node(index) => index.to_string(),
    }
}
