//! Times as runtimes report them: RFC 3339 in UTC, as Docker prints `State.FinishedAt`.

use std::time::{Duration, SystemTime};

/// An RFC 3339 UTC time as Docker prints it, `2026-11-22T04:47:46.588950442Z`; `None` for
/// anything else and for times before 1970 (Docker's zero time, for a container never stopped).
pub fn parse_utc(text: &str) -> Option<SystemTime> {
    let text = text.trim().strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let numbers = |text: &str, separator: char| -> Option<[i64; 3]> {
        let parts: Vec<i64> = text
            .split(separator)
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        parts.try_into().ok()
    };
    let [year, month, day] = numbers(date, '-')?;
    let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let [hour, minute, second] = numbers(clock, ':')?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || fraction.is_empty() {
        return None;
    }
    let digits = &fraction[..fraction.len().min(9)];
    let nanos: u32 = format!("{digits:0<9}").parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let shifted = if month <= 2 { year - 1 } else { year };
    let era = shifted.div_euclid(400);
    let year_of_era = shifted - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = u64::try_from(days * 86_400 + hour * 3_600 + minute * 60 + second).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_times_parse() {
        let since_epoch = |text: &str| {
            parse_utc(text)
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
        };
        // `date -u -d 2026-11-22T04:47:46Z +%s` says 1795322866.
        let at = since_epoch("2026-11-22T04:47:46.588950442Z");
        assert_eq!(at.as_secs(), 1_795_322_866);
        assert_eq!(at.subsec_nanos(), 588_950_442);
        assert_eq!(since_epoch("1970-01-01T00:00:00Z"), Duration::ZERO);
        assert_eq!(
            since_epoch("2000-03-01T00:00:00.5Z"),
            Duration::from_millis(951_868_800_500)
        );
        for bad in [
            "0001-01-01T00:00:00Z",
            "yesterday",
            "2026-11-22T04:47:46.Z",
            "",
        ] {
            assert!(parse_utc(bad).is_none(), "{bad}");
        }
    }
}
