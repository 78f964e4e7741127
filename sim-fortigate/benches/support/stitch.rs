//! What the automation benches share (`automation`, `notify_burst`): the Compromised Host
//! Quarantine stitch they run and the percentiles they print.

use std::time::Duration;

/// The Compromised Host Quarantine stitch with a `ban-ip` and an `alert` action (no EMS
/// needed).
pub const IOC_STITCH_CLI: &str = "config system automation-action
edit \"ban\"
set action-type ban-ip
next
edit \"say\"
set action-type alert
set message \"%%log.srcip%% %%log.threat%%\"
next
end
config system automation-stitch
edit \"Compromised Host Quarantine\"
set status enable
set trigger \"Compromised Host Quarantine\"
set action \"ban\" \"say\"
next
end
";

/// The `p` quantile (0..=1) of `v` (sorts it).
pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}
