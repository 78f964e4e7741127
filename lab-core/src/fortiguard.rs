//! FortiGuard web filter categories (id, name) as FortiOS lists them, reference
//! `fortios.md` §5.3: the FortiOS 6.4 list and what 7.0 and 7.2 changed. Shared by the
//! FortiGate (its `webfilter` tables) and the lab Internet (the category of each site).

/// The categories of FortiOS 6.4 (ids 1 to 95, 6.4 names), in FortiOS order.
pub const CATEGORIES_6_4: &[(u8, &str)] = &[
    (1, "Drug Abuse"),
    (2, "Alternative Beliefs"),
    (3, "Hacking"),
    (4, "Illegal or Unethical"),
    (5, "Discrimination"),
    (6, "Explicit Violence"),
    (7, "Abortion"),
    (8, "Other Adult Materials"),
    (9, "Advocacy Organizations"),
    (11, "Gambling"),
    (12, "Extremist Groups"),
    (13, "Nudity and Risque"),
    (14, "Pornography"),
    (15, "Dating"),
    (16, "Weapons (Sales)"),
    (17, "Advertising"),
    (18, "Brokerage and Trading"),
    (19, "Freeware and Software Downloads"),
    (20, "Games"),
    (23, "Web-based Email"),
    (24, "File Sharing and Storage"),
    (25, "Streaming Media and Download"),
    (26, "Malicious Websites"),
    (28, "Entertainment"),
    (29, "Arts and Culture"),
    (30, "Education"),
    (31, "Finance and Banking"),
    (33, "Health and Wellness"),
    (34, "Job Search"),
    (35, "Medicine"),
    (36, "News and Media"),
    (37, "Social Networking"),
    (38, "Political Organizations"),
    (39, "Reference"),
    (40, "Global Religion"),
    (41, "Search Engines and Portals"),
    (42, "Shopping"),
    (43, "General Organizations"),
    (44, "Society and Lifestyles"),
    (46, "Sports"),
    (47, "Travel"),
    (48, "Personal Vehicles"),
    (49, "Business"),
    (50, "Information and Computer Security"),
    (51, "Government and Legal Organizations"),
    (52, "Information Technology"),
    (53, "Armed Forces"),
    (54, "Dynamic Content"),
    (55, "Meaningless Content"),
    (56, "Web Hosting"),
    (57, "Marijuana"),
    (58, "Folklore"),
    (59, "Proxy Avoidance"),
    (61, "Phishing"),
    (62, "Plagiarism"),
    (63, "Sex Education"),
    (64, "Alcohol"),
    (65, "Tobacco"),
    (66, "Lingerie and Swimsuit"),
    (67, "Sports Hunting and War Games"),
    (68, "Web Chat"),
    (69, "Instant Messaging"),
    (70, "Newsgroups and Message Boards"),
    (71, "Digital Postcards"),
    (72, "Peer-to-peer File Sharing"),
    (75, "Internet Radio and TV"),
    (76, "Internet Telephony"),
    (77, "Child Education"),
    (78, "Real Estate"),
    (79, "Restaurant and Dining"),
    (80, "Personal Websites and Blogs"),
    (81, "Secure Websites"),
    (82, "Content Servers"),
    (83, "Child Abuse"),
    (84, "Web-based Applications"),
    (85, "Domain Parking"),
    (86, "Spam URLs"),
    (87, "Personal Privacy"),
    (88, "Dynamic DNS"),
    (89, "Auction"),
    (90, "Newly Observed Domain"),
    (91, "Newly Registered Domain"),
    (92, "Charitable Organizations"),
    (93, "Remote Access"),
    (94, "Web Analytics"),
    (95, "Online Meeting"),
];

/// Categories FortiOS 7.0 renamed (id, 7.0 name).
pub const RENAMED_7_0: &[(u8, &str)] = &[(83, "Child Sexual Abuse")];

/// Categories FortiOS 7.0 added, in FortiOS order; 97 to 99 are unnamed placeholders
/// (see [`is_placeholder`]).
pub const ADDED_7_0: &[(u8, &str)] = &[
    (96, "Terrorism"),
    (97, "Category 97"),
    (98, "Category 98"),
    (99, "Category 99"),
];

/// Categories FortiOS 7.2 added, in FortiOS order.
pub const ADDED_7_2: &[(u8, &str)] = &[
    (100, "Artificial Intelligence Technology"),
    (101, "Cryptocurrency"),
];

/// Whether `name` is the placeholder name FortiOS gives an id without a category
/// (`Category 97`).
pub fn is_placeholder(name: &str) -> bool {
    name.starts_with("Category ")
}

/// The categories of FortiOS `major.minor` (6.4 and later), in FortiOS order.
pub fn categories(major: u32, minor: u32) -> Vec<(u8, &'static str)> {
    let mut v = CATEGORIES_6_4.to_vec();
    if major >= 7 {
        for &(id, name) in RENAMED_7_0 {
            if let Some(c) = v.iter_mut().find(|c| c.0 == id) {
                c.1 = name;
            }
        }
        v.extend_from_slice(ADDED_7_0);
        if minor >= 2 {
            v.extend_from_slice(ADDED_7_2);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_per_version() {
        let v64 = categories(6, 4);
        assert_eq!(v64.len(), 86);
        assert_eq!(v64.first(), Some(&(1, "Drug Abuse")));
        assert_eq!(v64.last(), Some(&(95, "Online Meeting")));
        assert!(v64.contains(&(83, "Child Abuse")));
        let v70 = categories(7, 0);
        assert_eq!(v70.len(), 90);
        assert!(v70.contains(&(83, "Child Sexual Abuse")));
        assert_eq!(v70.last(), Some(&(99, "Category 99")));
        let v72 = categories(7, 2);
        assert_eq!(v72.len(), 92);
        assert_eq!(v72.last(), Some(&(101, "Cryptocurrency")));
        assert!(is_placeholder("Category 97") && !is_placeholder("Terrorism"));
    }
}
