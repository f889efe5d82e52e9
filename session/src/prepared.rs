//! The next epoch, prepared ahead of time: its content key and every current reader's
//! key message for it, wrapped and signed before anyone asks for a rotation, so that a
//! revocation only has to publish them (minus the revoked reader's).
//!
//! Why it is safe (docs/SECURITY.md, "Prepared epochs"): the prepared key has sealed
//! nothing and was never published; it is wrapped only for readers granted when it was
//! prepared, and a message is published only for a reader still granted, under the same
//! grant, when the rotation happens; it lives in memory only (it reaches the state file
//! when, and only when, it becomes the current key, like any new key); and any rotation
//! consumes or discards it, so it is never the key of two epochs.
//!
//! Sans-IO: [`crate::PublisherSession::preparation`] hands out the work as a
//! [`Preparation`] that owns what it needs, the shell runs it wherever it likes (another
//! thread, off the state lock), and [`crate::PublisherSession::install_prepared`] takes
//! the result back, keeping only what still matches the reader set.

use std::collections::HashMap;

use sealpost_protocol::ContentKey;

use crate::keys::{Batch, BuiltKeyMessage, Grantee, Job};
use crate::SessionError;

/// The next epoch as prepared so far (held by the session, in memory only).
pub(crate) struct NextEpoch {
    /// Identifies this preparation: a [`Preparation`] handed out for another one (since
    /// consumed or discarded) is refused at install.
    pub token: u64,
    /// The epoch it becomes: the current epoch + 1 when it was made.
    pub epoch: u64,
    /// Its content key: fresh, used for nothing yet.
    pub key: ContentKey,
    /// Per subscriber, the key message built for the next epoch (and the current one),
    /// with the job it was built from, to tell whether it is still for the same grant.
    messages: HashMap<String, (Job, BuiltKeyMessage)>,
}

impl NextEpoch {
    /// A new preparation of `epoch` with a fresh key.
    pub fn new(token: u64, epoch: u64) -> NextEpoch {
        NextEpoch {
            token,
            epoch,
            key: ContentKey::generate(),
            messages: HashMap::new(),
        }
    }

    /// The key message prepared for `grantee` (subscriber `id`), if it was built for this
    /// very grant; anything else is left out (it is never published).
    pub fn take(&mut self, id: &str, grantee: &Grantee) -> Option<BuiltKeyMessage> {
        match self.messages.remove(id) {
            Some((job, built)) if job.is_for(grantee) => Some(built),
            _ => None,
        }
    }

    /// Whether `grantee` (subscriber `id`) has a key message prepared for its grant.
    pub fn has(&self, id: &str, grantee: &Grantee) -> bool {
        self.messages
            .get(id)
            .is_some_and(|(job, _)| job.is_for(grantee))
    }

    /// Keeps the built messages whose grants are still those of `grantees`; returns how
    /// many.
    pub fn install(
        &mut self,
        built: Vec<(Job, BuiltKeyMessage)>,
        grantees: &std::collections::BTreeMap<String, Grantee>,
    ) -> usize {
        let mut kept = 0;
        for (job, message) in built {
            let current = grantees
                .get(&message.subscriber)
                .is_some_and(|g| job.is_for(g));
            if current {
                kept += 1;
                self.messages
                    .insert(message.subscriber.clone(), (job, message));
            }
        }
        kept
    }
}

/// Work that prepares the next epoch's key messages for the readers that lack one:
/// wrapping the next content key for each and signing their key messages. Owns all it
/// needs (the next key among it, in memory), so it can run on any thread while the
/// session goes on; [`Preparation::run`] uses all cores.
pub struct Preparation {
    pub(crate) token: u64,
    pub(crate) batch: Batch,
    pub(crate) jobs: Vec<Job>,
}

impl std::fmt::Debug for Preparation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Preparation")
            .field("readers", &self.jobs.len())
            .finish_non_exhaustive()
    }
}

impl Preparation {
    /// How many readers' key messages it builds.
    pub fn readers(&self) -> usize {
        self.jobs.len()
    }

    /// Builds the key messages, on rayon's threads (blocks the calling thread meanwhile).
    pub fn run(self) -> Prepared {
        Prepared {
            token: self.token,
            built: self.batch.build_jobs(self.jobs).map_err(SessionError::from),
        }
    }
}

/// The result of a [`Preparation`], for [`crate::PublisherSession::install_prepared`].
pub struct Prepared {
    pub(crate) token: u64,
    pub(crate) built: Result<Vec<(Job, BuiltKeyMessage)>, SessionError>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("built", &self.built.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}
