/// Times as the console shows them: UTC, to the second, and ages a person reads at a glance.
enum ConsoleTime {
    /// `2026-12-07 16:03:12Z` for milliseconds since the epoch.
    static func utc(_ milliseconds: Int64) -> String {
        let seconds = milliseconds.floorDivided(by: 1_000)
        let days = seconds.floorDivided(by: 86_400)
        let secondOfDay = seconds - days * 86_400
        // Howard Hinnant's civil_from_days.
        let shifted = days + 719_468
        let era = shifted.floorDivided(by: 146_097)
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return "\(year)-\(two(month))-\(two(day)) \(two(secondOfDay / 3_600)):\(two(secondOfDay / 60 % 60)):\(two(secondOfDay % 60))Z"
    }

    /// `850 ms`, `12 s`, `4 min`, `3 h`, `2 d`.
    static func span(_ milliseconds: Int64) -> String {
        let value = max(milliseconds, 0)
        switch value {
        case ..<1_000: return "\(value) ms"
        case ..<120_000: return "\(value / 1_000) s"
        case ..<7_200_000: return "\(value / 60_000) min"
        case ..<172_800_000: return "\(value / 3_600_000) h"
        default: return "\(value / 86_400_000) d"
        }
    }

    private static func two(_ value: Int64) -> String {
        value < 10 ? "0\(value)" : "\(value)"
    }
}

extension Int64 {
    fileprivate func floorDivided(by divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }
}
