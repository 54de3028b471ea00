//! Where an actor sits in the tree, and finding its current incarnation.
//!
//! A restarted actor is a new actor with a new `ActorRef`, so nobody should
//! hold on to one. Supervisors register every child under its tree path
//! (prefixed by a per-tree scope, so several trees can share a process in
//! tests); callers such as HTTP handlers resolve the path on each use.

use std::sync::Arc;

use ractor::{ActorRef, Message};

/// A position in one supervision tree: `node/ingest/ingestor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorPath {
    scope: Arc<str>,
    path: String,
}

impl ActorPath {
    /// The root of a tree. `scope` must be unique per tree within a process.
    pub fn root(scope: &str, name: &str) -> Self {
        Self {
            scope: Arc::from(scope),
            path: name.to_owned(),
        }
    }

    /// The path of child `name` below this one.
    pub fn child(&self, name: &str) -> Self {
        Self {
            scope: Arc::clone(&self.scope),
            path: format!("{}/{name}", self.path),
        }
    }

    /// Slash-separated path from the root.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The last segment.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// The name the actor is registered under in ractor's registry.
    pub fn registered_name(&self) -> String {
        format!("{}:{}", self.scope, self.path)
    }

    /// A directory over the same tree.
    pub fn directory(&self) -> ActorDirectory {
        ActorDirectory {
            scope: Arc::clone(&self.scope),
        }
    }
}

/// Resolves tree paths to the running incarnation of an actor.
#[derive(Debug, Clone)]
pub struct ActorDirectory {
    scope: Arc<str>,
}

impl ActorDirectory {
    /// The running actor at `path`, if any, typed by its message.
    pub fn get<M: Message>(&self, path: &str) -> Option<ActorRef<M>> {
        let cell = ractor::registry::where_is(format!("{}:{path}", self.scope))?;
        (cell.is_message_type_of::<M>() != Some(false)).then(|| cell.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_compose_and_name_their_last_segment() {
        let root = ActorPath::root("t1", "node");
        let leaf = root.child("ingest").child("shard-0");
        assert_eq!(leaf.path(), "node/ingest/shard-0");
        assert_eq!(leaf.name(), "shard-0");
        assert_eq!(root.name(), "node");
        assert_eq!(leaf.registered_name(), "t1:node/ingest/shard-0");
    }
}
