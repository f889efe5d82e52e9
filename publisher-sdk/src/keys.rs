//! Building key messages for every granted subscriber, in parallel.

use std::collections::HashMap;

use rayon::prelude::*;
use sealpost_protocol::{seal_key_message, ContentKey, KeyRecipient, PublisherIdentity, SealError};

/// How many recent epochs a key message carries: the current one and the one before, so
/// messages in flight across a rotation still open. Each extra epoch costs one RSA
/// wrapping per subscriber per rekey.
pub(crate) const EPOCHS_PER_KEY_MESSAGE: usize = 2;

/// A granted subscriber, ready for wrapping.
pub(crate) struct Grantee {
    pub recipient: KeyRecipient,
    pub granted_epoch: u64,
}

/// Key messages `(topic, bytes)` for `grantees`, wrapped in parallel (RSA-OAEP wrapping
/// dominates the cost of a rekey). `keys` is `(epoch, key)` newest last. A grantee gets
/// only epochs at or after the one it was granted at.
pub(crate) fn build_all<'a>(
    publisher: &PublisherIdentity,
    prefix: &sealpost_protocol::KeyLocation,
    keys: &[(u64, ContentKey)],
    grantees: impl IntoParallelIterator<Item = &'a Grantee>,
    issued_at: u64,
) -> Result<HashMap<String, (String, Vec<u8>)>, SealError> {
    grantees
        .into_par_iter()
        .map(|g| {
            let topic = prefix
                .key_message_topic(g.recipient.id())
                .ok_or_else(|| SealError::Encoding("key location is not a topic".into()))?;
            let entries: Vec<(u64, &ContentKey)> = keys
                .iter()
                .rev()
                .filter(|(epoch, _)| *epoch >= g.granted_epoch)
                .take(EPOCHS_PER_KEY_MESSAGE)
                .map(|(e, k)| (*e, k))
                .collect();
            let bytes = seal_key_message(publisher, &g.recipient, &entries, &topic, issued_at)?;
            Ok((g.recipient.id().to_owned(), (topic, bytes)))
        })
        .collect()
}
