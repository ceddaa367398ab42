//! ISO 8601 durations for retention periods.
//!
//! Calendar units are turned into fixed lengths, rounding *down* so that data is never kept
//! longer than the policy says: a year is 365 days, a month 30 days, a week 7 days. Only integer
//! components are accepted (`P1Y6M`, `P30D`, `PT12H`, `P2W`); fractions and negative values are
//! refused.

/// Parses an ISO 8601 duration. The error says what is wrong in words a policy author follows.
pub fn parse_iso8601(s: &str) -> Result<time::Duration, String> {
    const HINT: &str = "write it as an ISO 8601 duration such as P30D, P2Y, PT12H or P1Y6M";
    let rest = s
        .strip_prefix('P')
        .ok_or_else(|| format!("duration `{s}` does not start with `P`; {HINT}"))?;
    if rest.is_empty() {
        return Err(format!("duration `{s}` has no amount; {HINT}"));
    }
    // Allowed unit designators in order, before and after `T`.
    const DATE: [(char, i64); 4] = [
        ('Y', 365 * 86_400),
        ('M', 30 * 86_400),
        ('W', 7 * 86_400),
        ('D', 86_400),
    ];
    const TIME: [(char, i64); 3] = [('H', 3_600), ('M', 60), ('S', 1)];
    let (date, time_part) = match rest.split_once('T') {
        Some((d, t)) => {
            if t.is_empty() {
                return Err(format!(
                    "duration `{s}` has `T` but no hours, minutes or seconds after it; {HINT}"
                ));
            }
            (d, Some(t))
        }
        None => (rest, None),
    };
    let mut seconds: i64 = 0;
    for (part, units) in [(date, &DATE[..]), (time_part.unwrap_or(""), &TIME[..])] {
        let mut next_unit = 0;
        let mut digits = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let pos = units[next_unit..]
                .iter()
                .position(|(u, _)| *u == c)
                .map(|p| p + next_unit)
                .ok_or_else(|| {
                    format!("duration `{s}` has `{c}` where it is not allowed (units go Y M W D, then T H M S, each once); {HINT}")
                })?;
            if digits.is_empty() {
                return Err(format!(
                    "duration `{s}` has `{c}` without a number before it; {HINT}"
                ));
            }
            let n: i64 = digits
                .parse()
                .map_err(|_| format!("duration `{s}` has a number too large to use; {HINT}"))?;
            seconds = n
                .checked_mul(units[pos].1)
                .and_then(|x| seconds.checked_add(x))
                .ok_or_else(|| format!("duration `{s}` is too long to use; {HINT}"))?;
            digits.clear();
            next_unit = pos + 1;
        }
        if !digits.is_empty() {
            return Err(format!(
                "duration `{s}` ends with a number without a unit; {HINT}"
            ));
        }
    }
    if seconds == 0 {
        return Err(format!(
            "duration `{s}` is zero; a retention period must be longer than zero"
        ));
    }
    Ok(time::Duration::seconds(seconds))
}

#[cfg(test)]
mod tests {
    use super::parse_iso8601;
    use time::Duration;

    #[test]
    fn calendar_units_use_the_documented_fixed_lengths() {
        assert_eq!(parse_iso8601("P30D").unwrap(), Duration::days(30));
        assert_eq!(parse_iso8601("P2Y").unwrap(), Duration::days(730));
        assert_eq!(parse_iso8601("PT12H").unwrap(), Duration::hours(12));
        assert_eq!(parse_iso8601("P1Y6M").unwrap(), Duration::days(365 + 180));
        assert_eq!(parse_iso8601("P2W").unwrap(), Duration::days(14));
        assert_eq!(
            parse_iso8601("P1DT1H1M1S").unwrap(),
            Duration::seconds(86_400 + 3_661)
        );
    }

    #[test]
    fn malformed_durations_are_refused() {
        for bad in [
            "",
            "P",
            "30D",
            "PT",
            "P1H",
            "P1M1Y",
            "P1.5Y",
            "P-1D",
            "PD",
            "P1D2",
            "P0D",
            "p1d",
            "P1DT",
            "P99999999999999999999Y",
        ] {
            assert!(parse_iso8601(bad).is_err(), "{bad:?} accepted");
        }
    }
}
