//! Rogue-client detection on the request path: feed each key's watch (see
//! `keyforge_control::anomaly`) and turn what it finds into alerts, and,
//! for keys created with `--on-anomaly suspend`, into an immediate
//! suspension (the dispatcher then records it in the store).

use keyforge_control::Finding;
use keyforge_types::AnomalyAction;
use time::OffsetDateTime;

use crate::alerts::{Alerts, Raised};
use crate::snapshot::{KeyEntry, unix_ms};

pub(crate) fn report(
    alerts: &Alerts,
    entry: &KeyEntry,
    findings: impl IntoIterator<Item = Finding>,
    now: OffsetDateTime,
) {
    for finding in findings {
        let suspend = entry.record.on_anomaly == AnomalyAction::Suspend;
        if suspend {
            entry.watch.set_suspended(true);
        }
        let key_id = &entry.record.id;
        // Spikes and failure bursts alert at most once an hour per key; a
        // new address once per address.
        let dedup = match &finding {
            Finding::NewAddress { address } => format!("anomaly/{key_id}/new_address/{address}"),
            other => format!(
                "anomaly/{key_id}/{}/{}",
                other.rule(),
                unix_ms(now).div_euclid(3_600_000)
            ),
        };
        tracing::warn!(key_id = %key_id, rule = finding.rule(), suspend, "anomaly detected");
        alerts.raise(Raised::Anomaly {
            key_id: key_id.clone(),
            rule: finding.rule(),
            detail: finding.describe(),
            dedup: Some(dedup),
            suspended: suspend,
        });
    }
}
