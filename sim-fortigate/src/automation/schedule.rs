//! `trigger-type scheduled`: when a schedule next comes due, in lab-local seconds. Pure code.

use fortilab_core::clock::{civil_from_days, days_from_civil};

use super::model::Schedule;

const DAY: i64 = 86_400;

/// The first instant strictly after `after` (lab-local Unix seconds, i.e. UTC seconds plus
/// the time-zone offset) at which `s` fires.
pub fn next_fire(s: &Schedule, after: i64) -> i64 {
    match *s {
        Schedule::Hourly { minute } => {
            let base = after.div_euclid(3600) * 3600 + minute as i64 * 60;
            if base > after {
                base
            } else {
                base + 3600
            }
        }
        Schedule::Daily { hour, minute } => next_day(after, hour, minute, |_| true),
        Schedule::Weekly {
            weekday,
            hour,
            minute,
        } => next_day(after, hour, minute, |days| {
            // 1970-01-01 was a Thursday (4).
            (days + 4).rem_euclid(7) == weekday as i64
        }),
        Schedule::Monthly { day, hour, minute } => next_day(after, hour, minute, |days| {
            let (_, _, d) = civil_from_days(days);
            d == day
        }),
    }
}

fn next_day(after: i64, hour: u32, minute: u32, ok: impl Fn(i64) -> bool) -> i64 {
    let offset = hour as i64 * 3600 + minute as i64 * 60;
    let first = after.div_euclid(DAY);
    // A monthly day 31 may skip months; 400 days always finds one.
    for days in first..first + 400 {
        let t = days * DAY + offset;
        if t > after && ok(days) {
            return t;
        }
    }
    i64::MAX
}

/// Lab-local seconds of a date, for tests and callers (a date that does not exist counts
/// as 1970-01-01).
pub fn local_secs(y: i64, m: u32, d: u32, hh: u32, mm: u32) -> i64 {
    days_from_civil(y, m, d).unwrap_or(0) * DAY + hh as i64 * 3600 + mm as i64 * 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_fire_times() {
        // 2021-03-04 (a Thursday) 10:11.
        let now = local_secs(2021, 3, 4, 10, 11);
        assert_eq!(
            next_fire(&Schedule::Hourly { minute: 30 }, now),
            local_secs(2021, 3, 4, 10, 30)
        );
        assert_eq!(
            next_fire(&Schedule::Hourly { minute: 5 }, now),
            local_secs(2021, 3, 4, 11, 5)
        );
        assert_eq!(
            next_fire(
                &Schedule::Daily {
                    hour: 10,
                    minute: 11
                },
                now
            ),
            local_secs(2021, 3, 5, 10, 11),
            "strictly after"
        );
        assert_eq!(
            next_fire(
                &Schedule::Daily {
                    hour: 23,
                    minute: 0
                },
                now
            ),
            local_secs(2021, 3, 4, 23, 0)
        );
        // Monday after Thursday 2021-03-04 is 2021-03-08.
        assert_eq!(
            next_fire(
                &Schedule::Weekly {
                    weekday: 1,
                    hour: 3,
                    minute: 15
                },
                now
            ),
            local_secs(2021, 3, 8, 3, 15)
        );
        // Thursday later the same day.
        assert_eq!(
            next_fire(
                &Schedule::Weekly {
                    weekday: 4,
                    hour: 12,
                    minute: 0
                },
                now
            ),
            local_secs(2021, 3, 4, 12, 0)
        );
        assert_eq!(
            next_fire(
                &Schedule::Monthly {
                    day: 1,
                    hour: 0,
                    minute: 0
                },
                now
            ),
            local_secs(2021, 4, 1, 0, 0)
        );
        // Day 31 skips April.
        assert_eq!(
            next_fire(
                &Schedule::Monthly {
                    day: 31,
                    hour: 0,
                    minute: 0
                },
                local_secs(2021, 4, 1, 0, 0)
            ),
            local_secs(2021, 5, 31, 0, 0)
        );
    }
}
