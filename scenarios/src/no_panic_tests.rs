//! No scenario or lab definition panics `fortilab validate`/`run`: the library's files with
//! hostile pieces inserted at random places (multi-byte characters inside keys, values and
//! durations, numbers past their limits) give a `DefError` naming file:line, or load.

use crate::scenario;
use fortilab_core::text::HOSTILE_PIECES;
use proptest::prelude::*;

const LIBRARY: &[&str] = &[
    include_str!("../library/seed-flow.toml"),
    include_str!("../library/ack-retrigger.toml"),
    include_str!("../library/release-access-code.toml"),
    include_str!("../library/realistic-x100.toml"),
];

const TOML_PIECES: &[&str] = &[
    "\"",
    "=",
    "[",
    "]",
    "{",
    "}",
    "\n",
    "[[step]]\n",
    "within = \"",
    "1e300",
    "99999999999999999999h",
    "-1s",
    "NaN",
    "inf",
    "speed = ",
    "tz = \"",
    "wait = ",
    "within = 1e300\n",
    "wait = 1e300\n",
];

fn mutated() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(LIBRARY),
        proptest::collection::vec(
            (
                any::<prop::sample::Index>(),
                prop_oneof![
                    proptest::sample::select(HOSTILE_PIECES),
                    proptest::sample::select(TOML_PIECES),
                ],
            ),
            1..6,
        ),
    )
        .prop_map(|(base, edits)| {
            let mut s = base.to_string();
            for (at, piece) in edits {
                let bounds: Vec<usize> =
                    s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
                let i = bounds[at.index(bounds.len())];
                s.insert_str(i, piece);
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn mutated_scenarios_load_or_fail_typed(text in mutated()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, &text).unwrap();
        if let Err(e) = scenario::load(&path) {
            prop_assert!(e.line >= 1, "{e:?}");
        }
    }

    #[test]
    fn durations_and_time_zones(s in "\\PC{0,12}", n in any::<f64>()) {
        let _ = scenario::parse_duration(&s);
        let _ = scenario::parse_duration(&format!("{n}h"));
        let _ = crate::labdef::parse_tz(&s);
    }
}

#[test]
fn durations_past_u64_seconds_are_errors() {
    assert_eq!(scenario::parse_duration("99999999999999999999h"), None);
    assert_eq!(scenario::parse_duration("1e300s"), None);
    assert!(scenario::parse_duration("1.5s").is_some());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        "[scenario]\nname = \"x\"\n[[step]]\nname = \"w\"\nwait = \"5s\"\nwithin = 1e300\n",
    )
    .unwrap();
    let e = scenario::load(&path).unwrap_err();
    assert!(e.message.contains("duration"), "{e:?}");
}
