//! FortiAnalyzer/FortiOS time zones: `config system global` / `set timezone <code>` takes a
//! two-digit code; `get system status` (and JSON-RPC `/sys/status`) shows the zone as
//! `(GMT-8:00) Pacific Time (US & Canada).`. One table serves both, so the two views agree.
//! Offsets are standard time (daylight saving is not modelled).

/// `(code, offset from UTC in minutes, name)`.
pub const ZONES: &[(&str, i32, &str)] = &[
    ("00", -720, "Eniwetok, Kwajalein"),
    ("01", -660, "Midway Island, Samoa"),
    ("02", -600, "Hawaii"),
    ("03", -540, "Alaska"),
    ("04", -480, "Pacific Time (US & Canada)"),
    ("05", -420, "Arizona"),
    ("06", -420, "Mountain Time (US & Canada)"),
    ("07", -360, "Central America"),
    ("08", -360, "Central Time (US & Canada)"),
    ("09", -360, "Mexico City"),
    ("10", -360, "Saskatchewan"),
    ("11", -300, "Bogota, Lima, Quito"),
    ("12", -300, "Eastern Time (US & Canada)"),
    ("13", -300, "Indiana (East)"),
    ("14", -240, "Atlantic Time (Canada)"),
    ("15", -240, "La Paz"),
    ("16", -240, "Santiago"),
    ("17", -210, "Newfoundland"),
    ("18", -180, "Brasilia"),
    ("19", -180, "Buenos Aires"),
    ("20", -180, "Nuuk (Greenland)"),
    ("21", -120, "Mid-Atlantic"),
    ("22", -60, "Azores"),
    ("23", -60, "Cape Verde Is."),
    ("24", 0, "Monrovia"),
    ("25", 0, "Dublin, Edinburgh, Lisbon, London, Canary Is."),
    ("26", 60, "Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna"),
    (
        "27",
        60,
        "Belgrade, Bratislava, Budapest, Ljubljana, Prague",
    ),
    ("28", 60, "Brussels, Copenhagen, Madrid, Paris"),
    ("29", 60, "Sarajevo, Skopje, Warsaw, Zagreb"),
    ("30", 60, "West Central Africa"),
    ("31", 120, "Athens, Sofia, Vilnius"),
    ("32", 120, "Bucharest"),
    ("33", 120, "Cairo"),
    ("34", 120, "Harare, Pretoria"),
    ("35", 120, "Helsinki, Riga, Tallinn"),
    ("36", 120, "Jerusalem"),
    ("37", 180, "Baghdad"),
    ("38", 180, "Kuwait, Riyadh"),
    ("39", 180, "St. Petersburg, Volgograd"),
    ("40", 180, "Nairobi"),
    ("41", 210, "Tehran"),
    ("42", 240, "Abu Dhabi, Muscat"),
    ("43", 240, "Baku"),
    ("44", 270, "Kabul"),
    ("45", 300, "Ekaterinburg"),
    ("46", 300, "Islamabad, Karachi, Tashkent"),
    ("47", 330, "Kolkata, Chennai, Mumbai, New Delhi"),
    ("48", 345, "Kathmandu"),
    ("49", 360, "Almaty, Novosibirsk"),
    ("50", 360, "Astana, Dhaka"),
    ("51", 330, "Sri Jayawardenepara"),
    ("52", 390, "Rangoon"),
    ("53", 420, "Bangkok, Hanoi, Jakarta"),
    ("54", 420, "Krasnoyarsk"),
    ("55", 480, "Beijing, ChongQing, HongKong, Urumgi, Irkutsk"),
    ("56", 480, "Ulaan Bataar"),
    ("57", 480, "Kuala Lumpur, Singapore"),
    ("58", 480, "Perth"),
    ("59", 480, "Taipei"),
    ("60", 540, "Osaka, Sapporo, Tokyo, Seoul"),
    ("61", 540, "Yakutsk"),
    ("62", 570, "Adelaide"),
    ("63", 570, "Darwin"),
    ("64", 600, "Brisbane"),
    ("65", 600, "Canberra, Melbourne, Sydney"),
    ("66", 600, "Guam, Port Moresby"),
    ("67", 600, "Hobart"),
    ("68", 600, "Vladivostok"),
    ("69", 600, "Magadan"),
    ("70", 660, "Solomon Is., New Caledonia"),
    ("71", 720, "Auckland, Wellington"),
    ("72", 720, "Fiji, Kamchatka, Marshall Is."),
    ("73", 780, "Nuku'alofa"),
    ("80", 0, "Greenwich Mean Time"),
];

/// The zone of a code.
pub fn by_code(code: &str) -> Option<(&'static str, i32, &'static str)> {
    ZONES.iter().copied().find(|z| z.0 == code.trim())
}

/// The first zone with this offset (`-480` → `04`); `None` for offsets no zone has.
pub fn code_for_offset(minutes: i32) -> Option<&'static str> {
    ZONES.iter().find(|z| z.1 == minutes).map(|z| z.0)
}

/// The `Time Zone` line of `get system status`: `(GMT-8:00) Pacific Time (US & Canada).`
pub fn display(code: &str) -> Option<String> {
    let (_, m, name) = by_code(code)?;
    if m == 0 {
        return Some(format!("(GMT) {name}."));
    }
    let sign = if m < 0 { '-' } else { '+' };
    let a = m.abs();
    Some(format!("(GMT{sign}{}:{:02}) {name}.", a / 60, a % 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_offsets_and_names() {
        assert_eq!(code_for_offset(-480), Some("04"));
        assert_eq!(code_for_offset(60), Some("26"));
        assert_eq!(code_for_offset(0), Some("24"));
        assert_eq!(code_for_offset(7), None);
        assert_eq!(
            display("04").unwrap(),
            "(GMT-8:00) Pacific Time (US & Canada)."
        );
        assert_eq!(
            display("47").unwrap(),
            "(GMT+5:30) Kolkata, Chennai, Mumbai, New Delhi."
        );
        assert_eq!(display("80").unwrap(), "(GMT) Greenwich Mean Time.");
        assert!(display("UTC").is_none());
        let mut codes: Vec<&str> = ZONES.iter().map(|z| z.0).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ZONES.len());
    }
}
