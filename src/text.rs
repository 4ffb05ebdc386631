//! Counts in human output, in one style: digits grouped by thousands and
//! the noun in the number it agrees with ("1 epoch", "42,000 rows"). JSON
//! and CSV files keep plain numbers.

/// 3360000 -> "3,360,000".
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count and its noun: `plural(1, "epoch")` is "1 epoch",
/// `plural(42000, "row")` is "42,000 rows". Every noun printed with a count
/// takes an `s` in the plural.
pub fn plural(n: usize, noun: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{} {noun}{s}", thousands(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(7960), "7,960");
        assert_eq!(thousands(42_000), "42,000");
        assert_eq!(thousands(999_999), "999,999");
        assert_eq!(thousands(3_360_000), "3,360,000");
    }

    #[test]
    fn plural_agrees_with_the_count() {
        assert_eq!(plural(0, "run"), "0 runs");
        assert_eq!(plural(1, "command"), "1 command");
        assert_eq!(plural(1, "epoch"), "1 epoch");
        assert_eq!(plural(2, "epoch"), "2 epochs");
        assert_eq!(plural(42_000, "row"), "42,000 rows");
        assert_eq!(plural(1, "rayon thread"), "1 rayon thread");
        assert_eq!(plural(1_000, "iteration"), "1,000 iterations");
    }
}
