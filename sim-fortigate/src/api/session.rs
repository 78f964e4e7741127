//! GUI/REST sessions as FortiOS 6.4 keeps them (pure logic, no I/O): the session table with
//! the idle timeout (`config system global` / `set admintimeout`, minutes), the per-source
//! failed-login counter and lockout (`admin-lockout-threshold` failures → the source address
//! may not log in for `admin-lockout-duration` seconds), and the exact `Set-Cookie` set and
//! body of `/logincheck` and `/logout`.
//!
//! Times are lab nanoseconds (the lab clock), so a lab running ×100 times out a 5-minute
//! session after 3 real seconds, as every other product delay does.
//!
//! The cookie set of a successful `/logincheck` follows the published captures (reference
//! fortios.md §1.2): `APSCOOKIE_<n>` (quoted `Era=…&Payload=…&AuthHash=…` value, `path=/;
//! HttpOnly`), `ccsrftoken_<n>` and `ccsrftoken` with the same quoted CSRF token (`path=/`),
//! and the clearing cookie `rl=;expires=Thu, 01 Jan 1970 00:00:01 GMT;path=/`. The last one
//! matters: the Ansible `fortinet.fortios` httpapi plugin keeps the session cookie for later
//! requests only when the login answer sets a cookie besides the session and CSRF ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use base64::Engine as _;
use rand::RngCore;

/// A logged-in GUI/REST session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    /// The CSRF token (`X-CSRFTOKEN` must carry it on writes).
    pub csrf: String,
    /// The real peer address that logged in.
    pub peer: IpAddr,
    /// The lab address of the peer (log `srcip`, `ui`).
    pub lab_peer: IpAddr,
    pub profile: String,
    /// The `sn` of the login log (correlates login and logout logs).
    pub sn: i64,
    /// Lab time of the login and of the last request, ns.
    pub since_ns: i64,
    pub last_ns: i64,
}

/// The `config system global` settings sessions follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `admintimeout`, minutes (1–480, default 5).
    pub admintimeout_min: i64,
    /// `admin-lockout-threshold` (1–10, default 3).
    pub lockout_threshold: u32,
    /// `admin-lockout-duration`, seconds (default 60).
    pub lockout_secs: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            admintimeout_min: 5,
            lockout_threshold: 3,
            lockout_secs: 60,
        }
    }
}

impl Policy {
    /// Reads the policy from `config system global` (defaults where unset or malformed).
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        let d = Self::default();
        let g = cfg.single("system global");
        let num = |k: &str| {
            g.and_then(|g| g.scalar(k))
                .and_then(|v| v.parse::<i64>().ok())
        };
        Self {
            admintimeout_min: num("admintimeout")
                .filter(|v| *v > 0)
                .unwrap_or(d.admintimeout_min),
            lockout_threshold: num("admin-lockout-threshold")
                .filter(|v| *v > 0)
                .map(|v| v as u32)
                .unwrap_or(d.lockout_threshold),
            lockout_secs: num("admin-lockout-duration")
                .filter(|v| *v > 0)
                .unwrap_or(d.lockout_secs),
        }
    }

    fn timeout_ns(&self) -> i64 {
        self.admintimeout_min.saturating_mul(60_000_000_000)
    }
}

/// What a failed login did to its source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; `n` failures in a row so far.
    Counted(u32),
    /// This failure reached the threshold: the source is locked out for `secs`.
    LockedOut { failures: u32, secs: i64 },
}

/// A session looked up for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Valid(Session),
    /// Idle longer than `admintimeout`: removed now (the caller logs the timeout).
    Expired(Session),
    Unknown,
}

#[derive(Debug, Default)]
struct Fails {
    count: u32,
    locked_until_ns: i64,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    fails: HashMap<IpAddr, Fails>,
}

/// The session table and the failed-login counters.
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds of lockout left for `ip` at `now_ns` (`None`: may log in).
    pub fn locked(&self, ip: IpAddr, now_ns: i64) -> Option<i64> {
        let g = self.lock();
        let f = g.fails.get(&ip)?;
        (f.locked_until_ns > now_ns)
            .then(|| (f.locked_until_ns - now_ns + 999_999_999) / 1_000_000_000)
    }

    /// Counts a failed login from `ip`; the `threshold`-th failure in a row locks it out.
    pub fn fail(&self, ip: IpAddr, now_ns: i64, p: &Policy) -> Failure {
        let mut g = self.lock();
        let f = g.fails.entry(ip).or_default();
        if f.locked_until_ns != 0 && f.locked_until_ns <= now_ns {
            // A lockout that ran out starts a fresh count.
            *f = Fails::default();
        }
        f.count += 1;
        if f.count >= p.lockout_threshold {
            f.locked_until_ns = now_ns.saturating_add(p.lockout_secs.saturating_mul(1_000_000_000));
            let failures = f.count;
            f.count = 0;
            Failure::LockedOut {
                failures,
                secs: p.lockout_secs,
            }
        } else {
            Failure::Counted(f.count)
        }
    }

    /// A successful login from `ip` clears its failure count.
    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().fails.remove(&ip);
    }

    pub fn insert(&self, sid: String, s: Session) {
        self.lock().sessions.insert(sid, s);
    }

    /// Looks `sid` up at `now_ns`: a valid session's idle timer restarts; one idle for longer
    /// than `admintimeout` is removed and returned as expired.
    pub fn touch(&self, sid: &str, now_ns: i64, p: &Policy) -> Lookup {
        let mut g = self.lock();
        let Some(s) = g.sessions.get_mut(sid) else {
            return Lookup::Unknown;
        };
        if now_ns.saturating_sub(s.last_ns) > p.timeout_ns() {
            let s = g.sessions.remove(sid).expect("present");
            return Lookup::Expired(s);
        }
        s.last_ns = now_ns.max(s.last_ns);
        Lookup::Valid(s.clone())
    }

    pub fn remove(&self, sid: &str) -> Option<Session> {
        self.lock().sessions.remove(sid)
    }

    /// Removes every session idle for longer than `admintimeout` (returned for logging).
    pub fn expire(&self, now_ns: i64, p: &Policy) -> Vec<Session> {
        let mut g = self.lock();
        let dead: Vec<String> = g
            .sessions
            .iter()
            .filter(|(_, s)| now_ns.saturating_sub(s.last_ns) > p.timeout_ns())
            .map(|(k, _)| k.clone())
            .collect();
        dead.iter().filter_map(|k| g.sessions.remove(k)).collect()
    }

    /// The current sessions (`monitor/system/current-admins`).
    pub fn list(&self) -> Vec<Session> {
        let mut v: Vec<Session> = self.lock().sessions.values().cloned().collect();
        v.sort_by_key(|s| s.since_ns);
        v
    }
}

/// Fresh secrets of a session from the OS CSPRNG: the `APSCOOKIE_` value and the CSRF token.
pub fn new_secrets() -> (String, String) {
    let mut payload = [0u8; 96];
    rand::rngs::OsRng.fill_bytes(&mut payload);
    let mut hash = [0u8; 21];
    rand::rngs::OsRng.fill_bytes(&mut hash);
    let mut csrf = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut csrf);
    (
        apscookie_value(&payload, &hash),
        csrf.iter().map(|b| format!("{b:02X}")).collect(),
    )
}

/// The `APSCOOKIE_` value as FortiOS writes it: `Era=0&Payload=<base64, 64-column lines>&
/// AuthHash=<base64>\n`, percent-encoded the way the published captures show (`%3D`, `%26`,
/// `%2F`, `%0A`; `+` kept).
pub fn apscookie_value(payload: &[u8], hash: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let p = b64.encode(payload);
    let mut lines = String::new();
    for (i, chunk) in p.as_bytes().chunks(64).enumerate() {
        if i > 0 {
            lines.push('\n');
        }
        lines.push_str(std::str::from_utf8(chunk).unwrap_or(""));
    }
    lines.push('\n');
    let raw = format!("Era=0&Payload={lines}&AuthHash={}\n", b64.encode(hash));
    let mut out = String::with_capacity(raw.len() * 2);
    for c in raw.chars() {
        match c {
            '=' => out.push_str("%3D"),
            '&' => out.push_str("%26"),
            '/' => out.push_str("%2F"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out
}

/// Cookie names of a device: the number FortiOS appends (`APSCOOKIE_<n>`, `ccsrftoken_<n>`)
/// and, on 7.x, the port form of the CSRF cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieNames {
    pub session: String,
    /// CSRF cookies, in the order they are set.
    pub csrf: Vec<String>,
}

impl CookieNames {
    /// 6.4: `APSCOOKIE_<n>`, `ccsrftoken_<n>`, `ccsrftoken`; 7.x: `APSCOOKIE_<port>_<n>`,
    /// `ccsrftoken_<port>_<n>` (no bare `ccsrftoken`: fortiosapi issue #79).
    pub fn new(serial: &str, major: u32, port: u16) -> Self {
        let n = serial
            .bytes()
            .fold(5381u32, |h, b| h.wrapping_mul(33) ^ b as u32)
            % 4_000_000_000;
        if major >= 7 {
            let m = serial
                .bytes()
                .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
                % 10_000_000;
            Self {
                session: format!("APSCOOKIE_{port}_{m}"),
                csrf: vec![format!("ccsrftoken_{port}_{m}")],
            }
        } else {
            Self {
                session: format!("APSCOOKIE_{n}"),
                csrf: vec![format!("ccsrftoken_{n}"), "ccsrftoken".into()],
            }
        }
    }

    /// The `Set-Cookie` values of a successful login, in order.
    pub fn login(&self, sid: &str, csrf: &str) -> Vec<String> {
        let mut v = vec![format!("{}=\"{sid}\"; path=/; HttpOnly", self.session)];
        for c in &self.csrf {
            v.push(format!("{c}=\"{csrf}\"; path=/"));
        }
        v.push("rl=;expires=Thu, 01 Jan 1970 00:00:01 GMT;path=/".into());
        v
    }

    /// The `Set-Cookie` values of `/logout` (every session cookie cleared) [P].
    pub fn logout(&self) -> Vec<String> {
        let mut v = vec![format!(
            "{}=\"\"; path=/; expires=Thu, 01 Jan 1970 00:00:01 GMT; HttpOnly",
            self.session
        )];
        for c in &self.csrf {
            v.push(format!(
                "{c}=\"\"; path=/; expires=Thu, 01 Jan 1970 00:00:01 GMT"
            ));
        }
        v
    }
}

/// The body of a successful `/logincheck`: `ajax=1` answers the one-line form clients test
/// the first character of; a browser form post gets the script redirect of the captures.
pub fn login_body(ok: bool, ajax: bool) -> &'static str {
    match (ok, ajax) {
        (true, true) => "1document.location=\"/ng/\";\n",
        (true, false) => "<script language=\"javascript\">\ndocument.location=\"/ng/\";\n</script>\n",
        (false, true) => "0document.location=\"/login?redir=%2Fng\";\n",
        (false, false) => {
            "<script language=\"javascript\">\ndocument.location=\"/login?redir=%2Fng&err=1\";\n</script>\n"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn session(now: i64) -> Session {
        Session {
            user: "admin".into(),
            csrf: "C".into(),
            peer: ip("127.0.0.1"),
            lab_peer: ip("10.115.1.5"),
            profile: "super_admin".into(),
            sn: 1,
            since_ns: now,
            last_ns: now,
        }
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn third_failure_locks_the_source_for_the_duration() {
        let t = Sessions::default();
        let p = Policy::default();
        let a = ip("10.115.1.5");
        let b = ip("10.115.1.6");
        assert_eq!(t.fail(a, 0, &p), Failure::Counted(1));
        assert_eq!(t.fail(a, S, &p), Failure::Counted(2));
        assert_eq!(t.locked(a, S), None);
        assert_eq!(
            t.fail(a, 2 * S, &p),
            Failure::LockedOut {
                failures: 3,
                secs: 60
            }
        );
        assert_eq!(t.locked(a, 2 * S), Some(60));
        assert_eq!(t.locked(a, 61 * S), Some(1));
        // Per source address: another address may still log in.
        assert_eq!(t.locked(b, 3 * S), None);
        assert_eq!(t.locked(a, 62 * S), None);
        // After the lockout the count starts again.
        assert_eq!(t.fail(a, 63 * S, &p), Failure::Counted(1));
        t.succeeded(a);
        assert_eq!(t.fail(a, 64 * S, &p), Failure::Counted(1));
    }

    #[test]
    fn idle_sessions_time_out_after_admintimeout() {
        let t = Sessions::default();
        let p = Policy {
            admintimeout_min: 1,
            ..Policy::default()
        };
        t.insert("sid".into(), session(0));
        assert!(matches!(t.touch("sid", 59 * S, &p), Lookup::Valid(_)));
        // The request at 59 s restarted the idle timer.
        assert!(matches!(t.touch("sid", 118 * S, &p), Lookup::Valid(_)));
        assert!(matches!(t.touch("sid", 179 * S, &p), Lookup::Expired(_)));
        assert_eq!(t.touch("sid", 179 * S, &p), Lookup::Unknown);
        t.insert("a".into(), session(0));
        t.insert("b".into(), session(100 * S));
        let gone = t.expire(130 * S, &p);
        assert_eq!(gone.len(), 1);
        assert_eq!(t.list().len(), 1);
    }

    #[test]
    fn login_cookies_are_the_captured_set() {
        let n = CookieNames::new("FGVM01TM00000000", 6, 443);
        assert!(n.session.starts_with("APSCOOKIE_"));
        let num = n.session.trim_start_matches("APSCOOKIE_");
        assert!(num.parse::<u32>().is_ok());
        let c = n.login("V", "ABC");
        assert_eq!(c.len(), 4);
        assert_eq!(c[0], format!("APSCOOKIE_{num}=\"V\"; path=/; HttpOnly"));
        assert_eq!(c[1], format!("ccsrftoken_{num}=\"ABC\"; path=/"));
        assert_eq!(c[2], "ccsrftoken=\"ABC\"; path=/");
        assert_eq!(c[3], "rl=;expires=Thu, 01 Jan 1970 00:00:01 GMT;path=/");
        let n7 = CookieNames::new("FGVM01TM00000000", 7, 8443);
        assert!(n7.csrf[0].starts_with("ccsrftoken_8443_"));
        assert_eq!(n7.csrf.len(), 1);
    }

    #[test]
    fn apscookie_value_is_percent_encoded_base64_lines() {
        let v = apscookie_value(&[0xff; 60], &[1; 21]);
        assert!(v.starts_with("Era%3D0%26Payload%3D"), "{v}");
        assert!(v.contains("%0A%26AuthHash%3D"), "{v}");
        assert!(v.ends_with("%0A"), "{v}");
        assert!(!v.contains(['=', '&', '/', '\n', '"', ';', ' ']), "{v}");
        let (sid, csrf) = new_secrets();
        assert_eq!(csrf.len(), 32);
        assert!(csrf
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
        assert_ne!(new_secrets().0, sid);
    }

    #[test]
    fn login_bodies() {
        assert!(login_body(true, true).starts_with('1'));
        assert!(login_body(false, true).starts_with('0'));
        assert!(login_body(true, false).contains("document.location=\"/ng/\""));
    }
}
