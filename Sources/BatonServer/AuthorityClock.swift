import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The two clocks the authority reads, injected so tests can control them.
///
/// Lease deadlines use only the monotonic clock; the wall clock is used for what must
/// survive a restart or be shown to people (`run_at`, `created_at`, `*_expires_at`).
public protocol AuthorityClock: Sendable {
    /// Milliseconds since the Unix epoch.
    func wallMilliseconds() -> Int64
    /// Milliseconds since an arbitrary origin; never goes backwards.
    func monotonicMilliseconds() -> Int64
}

/// The system's real-time and monotonic clocks.
public struct SystemClock: AuthorityClock {
    public init() {}

    public func wallMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000 + Int64(now.tv_nsec) / 1_000_000
    }

    public func monotonicMilliseconds() -> Int64 {
        Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000)
    }
}
