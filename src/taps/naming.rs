//! Choosing the new tap's name, `tapN`, as QEMU's helper names them.
//!
//! Asking the kernel for `tap%d` makes it parse the name of every interface
//! in the namespace, under the lock that every interface change takes; with
//! a thousand taps that is most of a run's time. Instead a few lookups by
//! name (galloping, then bisecting) find a free `N` with `tap(N-1)` taken:
//! the lowest free number whenever the taken ones have no gaps, which is
//! what `tap%d` gives too. With gaps it may be a higher free number; the
//! name is then still `tapN`, still unique, and at most one above the
//! highest number in use. (So a user who holds the taps at the points the
//! search looks at can choose the number of their next tap: SECURITY.md.)

use crate::policy::ifname::IfName;

/// What the kernel's pattern and our names share.
pub const PREFIX: &str = "tap";

/// Numbers past this are left to the kernel's pattern, which stops at
/// 32767 anyway: the search then costs at most 2 × 16 lookups.
pub const MAX_NUMBER: u32 = (1 << 15) - 1;

/// `tapN`: at most 13 bytes of letters and digits, always a valid name.
pub fn name(number: u32) -> IfName {
    IfName::new(format!("{PREFIX}{number}").as_bytes()).expect("tap and a u32 make a valid name")
}

/// The kernel's own pattern, `tap%d`, for when the search finds nothing.
pub fn pattern() -> IfName {
    IfName::new(format!("{PREFIX}%d").as_bytes()).expect("tap%d is a valid name")
}

/// Finds a free number, probing with `in_use`; `Ok(None)` if every number
/// up to [`MAX_NUMBER`] it looked at was taken. Stops at the first error.
pub fn search<E>(mut in_use: impl FnMut(u32) -> Result<bool, E>) -> Result<Option<u32>, E> {
    // Gallop over 0, 1, 3, 7, …: the first free one bounds the answer.
    let mut taken: Option<u32> = None;
    let mut free = 0u32;
    while in_use(free)? {
        if free == MAX_NUMBER {
            return Ok(None);
        }
        taken = Some(free);
        free = free * 2 + 1;
    }
    let Some(mut taken) = taken else {
        return Ok(Some(free));
    };
    // Bisect: `taken` is in use, `free` is not.
    while free - taken > 1 {
        let mid = taken + (free - taken) / 2;
        if in_use(mid)? {
            taken = mid;
        } else {
            free = mid;
        }
    }
    Ok(Some(free))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_at_the_extremes() {
        assert_eq!(name(0).as_bytes(), b"tap0");
        assert_eq!(name(u32::MAX).as_bytes(), b"tap4294967295");
        assert_eq!(pattern().as_bytes(), b"tap%d");
    }
    use std::collections::BTreeSet;
    use std::convert::Infallible;

    fn run(taken: &BTreeSet<u32>) -> (Option<u32>, usize) {
        let mut probes = 0;
        let found = search(|n| {
            probes += 1;
            Ok::<_, Infallible>(taken.contains(&n))
        });
        (found.unwrap_or_else(|e| match e {}), probes)
    }

    #[test]
    fn an_empty_namespace_gets_tap0_in_one_lookup() {
        assert_eq!(run(&BTreeSet::new()), (Some(0), 1));
        assert_eq!(name(0).as_bytes(), b"tap0");
    }

    #[test]
    fn without_gaps_it_is_the_lowest_free_number() {
        for n in 0..=1100 {
            let taken: BTreeSet<u32> = (0..n).collect();
            let (found, probes) = run(&taken);
            assert_eq!(found, Some(n));
            assert!(probes <= 2 * 11 + 2, "{n} taken: {probes} lookups");
        }
    }

    #[test]
    fn with_gaps_it_is_free_and_follows_a_taken_number() {
        let mut taken: BTreeSet<u32> = (0..1000).collect();
        for hole in [3, 100, 500, 998] {
            taken.remove(&hole);
        }
        let (found, _) = run(&taken);
        let n = found.unwrap();
        assert!(!taken.contains(&n) && taken.contains(&(n - 1)));
        assert!(n <= 999 + 1);
    }

    proptest::proptest! {
        #[test]
        fn any_answer_is_free_follows_a_taken_number_and_stays_near(
            taken in proptest::collection::btree_set(0u32..3000, 0..1500),
        ) {
            let (found, probes) = run(&taken);
            let n = found.unwrap();
            proptest::prop_assert!(!taken.contains(&n));
            proptest::prop_assert!(n == 0 || taken.contains(&(n - 1)));
            proptest::prop_assert!(n <= taken.last().map_or(0, |&m| m + 1));
            proptest::prop_assert!(probes <= 2 * 12 + 1);
        }
    }

    #[test]
    fn a_full_range_is_left_to_the_kernel() {
        let taken: BTreeSet<u32> = (0..=MAX_NUMBER).collect();
        let (found, probes) = run(&taken);
        assert_eq!(found, None);
        assert_eq!(probes, 16);
    }

    #[test]
    fn a_failed_lookup_ends_the_search() {
        let r: Result<Option<u32>, &str> = search(|n| if n < 3 { Ok(true) } else { Err("no") });
        assert_eq!(r, Err("no"));
    }
}
