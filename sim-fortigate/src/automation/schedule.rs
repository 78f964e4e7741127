//! `trigger-type scheduled`: when a schedule next comes due, in lab-local seconds. Pure code.

use fortilab_core::clock::{civil_from_days, days_from_civil, weekday_from_days};

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
            weekday_from_days(days) == weekday
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

    #[test]
    fn next_fire_across_month_year_and_leap_boundaries() {
        let weekly = |weekday| Schedule::Weekly {
            weekday,
            hour: 9,
            minute: 0,
        };
        let monthly = |day| Schedule::Monthly {
            day,
            hour: 9,
            minute: 0,
        };
        let daily = Schedule::Daily { hour: 9, minute: 0 };
        // Thursday 2020-12-31 10:00: the next Monday is in the new year, 2021-01-04.
        let nye = local_secs(2020, 12, 31, 10, 0);
        assert_eq!(next_fire(&weekly(1), nye), local_secs(2021, 1, 4, 9, 0));
        assert_eq!(next_fire(&weekly(4), nye), local_secs(2021, 1, 7, 9, 0));
        assert_eq!(next_fire(&daily, nye), local_secs(2021, 1, 1, 9, 0));
        assert_eq!(next_fire(&monthly(31), nye), local_secs(2021, 1, 31, 9, 0));
        // Day 29 of a month: February 2024 has one (leap year), February 2023 does not.
        assert_eq!(
            next_fire(&monthly(29), local_secs(2024, 2, 1, 0, 0)),
            local_secs(2024, 2, 29, 9, 0)
        );
        assert_eq!(
            next_fire(&monthly(29), local_secs(2023, 2, 1, 0, 0)),
            local_secs(2023, 3, 29, 9, 0)
        );
        // Daily after 28 February: the leap day in 2024, 1 March in 2023.
        assert_eq!(
            next_fire(&daily, local_secs(2024, 2, 28, 10, 0)),
            local_secs(2024, 2, 29, 9, 0)
        );
        assert_eq!(
            next_fire(&daily, local_secs(2023, 2, 28, 10, 0)),
            local_secs(2023, 3, 1, 9, 0)
        );
        // Weekly from the leap day (Thursday 2024-02-29) to Friday 2024-03-01.
        assert_eq!(
            next_fire(&weekly(5), local_secs(2024, 2, 29, 10, 0)),
            local_secs(2024, 3, 1, 9, 0)
        );
        // Monthly day 31 after 31 January skips February: 2021-03-31.
        assert_eq!(
            next_fire(&monthly(31), local_secs(2021, 1, 31, 10, 0)),
            local_secs(2021, 3, 31, 9, 0)
        );
    }
}
