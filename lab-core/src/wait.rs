//! Waiting for a condition in tests and tools: poll until it holds or a deadline passes (never
//! sleep-and-hope). The one helper every test uses, async ([`wait_for`]) or on a plain thread
//! ([`wait_for_blocking`]).

use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const POLL_EVERY: Duration = Duration::from_millis(10);

/// What a condition returns: `bool` (holds or not) or `Option<T>` (the value once it holds).
pub trait Outcome {
    type Value;
    fn into_value(self) -> Option<Self::Value>;
}

impl Outcome for bool {
    type Value = ();
    fn into_value(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_value(self) -> Option<T> {
        self
    }
}

/// Polls `cond` every [`POLL_EVERY`] until it holds (`true`, or `Some(value)`: the value is
/// returned) or `timeout` passes (panics naming `what`: for tests).
pub async fn wait_for<R: Outcome>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> R,
) -> R::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond().into_value() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// [`wait_for`] on a thread without a runtime (blocking tests).
pub fn wait_for_blocking<R: Outcome>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> R,
) -> R::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond().into_value() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let mut n = 0;
        let v = wait_for("three polls", Duration::from_secs(5), || {
            n += 1;
            (n >= 3).then_some(n)
        })
        .await;
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for never")]
    fn names_what_it_waited_for_on_timeout() {
        wait_for_blocking("never", Duration::from_millis(30), || false);
    }
}
