#if canImport(Glibc)
import func Glibc.pow
#elseif canImport(Musl)
import func Musl.pow
#elseif canImport(Darwin)
import func Darwin.pow
#endif

/// How long a job waits before its next attempt after a failure or an expired lease.
///
/// The delay grows exponentially, `initial · factor^(attempt-1)`, is capped at `maximum`,
/// and then jittered ("equal jitter": half fixed, half random) so that jobs failing
/// together do not all come back in the same millisecond.
public struct BackoffPolicy: Hashable, Sendable {
    /// The delay before the first retry, in milliseconds.
    public var initialMilliseconds: Int64
    /// The growth per attempt; 1 keeps the delay constant.
    public var factor: Double
    /// The cap on the delay, in milliseconds.
    public var maximumMilliseconds: Int64

    /// The default: 1 s, doubling, capped at 60 s.
    public static let standard = BackoffPolicy(initialMilliseconds: 1_000, factor: 2, maximumMilliseconds: 60_000)

    public init(initialMilliseconds: Int64, factor: Double, maximumMilliseconds: Int64) {
        self.initialMilliseconds = initialMilliseconds
        self.factor = factor
        self.maximumMilliseconds = maximumMilliseconds
    }

    /// The delay before the attempt after `attempt`, before jitter.
    ///
    /// - Parameter attempt: the attempt that just ended, counting from 1.
    public func baseDelay(afterAttempt attempt: Int) -> Int64 {
        let exponent = Double(max(attempt, 1) - 1)
        let grown = Double(self.initialMilliseconds) * pow(self.factor, exponent)
        // `grown` can be infinite for large attempts; the cap keeps it meaningful.
        guard grown.isFinite, grown < Double(self.maximumMilliseconds) else {
            return self.maximumMilliseconds
        }
        return Int64(grown)
    }

    /// The jittered delay before the attempt after `attempt`.
    ///
    /// - Parameters:
    ///   - attempt: the attempt that just ended, counting from 1.
    ///   - jitter: a number in `0..<1`; the caller draws it, so tests can fix it.
    public func delay(afterAttempt attempt: Int, jitter: Double) -> Int64 {
        let base = self.baseDelay(afterAttempt: attempt)
        let half = base / 2
        let clamped = min(max(jitter, 0), 1)
        return base - half + Int64(Double(half) * clamped)
    }
}
