/// What happens to a job whose attempt ended without success.
///
/// One rule serves both a worker's `fail` and an expired lease, so the two can never
/// disagree about when a job has run out of attempts.
public enum RetryDecision: Hashable, Sendable {
    /// Try again, not before `runAt` (wall-clock milliseconds).
    case retry(runAt: Int64)
    /// No more attempts: the job fails for good.
    case fail

    /// Decides the next state of a job whose attempt `attempt` just ended unsuccessfully.
    ///
    /// - Parameters:
    ///   - attempt: the attempt that ended, counting from 1.
    ///   - maxAttempts: how many attempts the job may have in all.
    ///   - retryAllowed: `false` when the worker said the failure is permanent.
    ///   - retryInMilliseconds: a delay the worker asked for, used instead of the backoff.
    ///   - backoff: the job's backoff policy.
    ///   - jitter: a number in `0..<1` for the backoff's jitter.
    ///   - now: the wall clock, in milliseconds since the Unix epoch.
    public static func afterUnsuccessfulAttempt(
        _ attempt: Int,
        maxAttempts: Int,
        retryAllowed: Bool = true,
        retryInMilliseconds: Int64? = nil,
        backoff: BackoffPolicy,
        jitter: Double,
        now: Int64
    ) -> RetryDecision {
        guard retryAllowed, attempt < maxAttempts else {
            return .fail
        }
        let delay = retryInMilliseconds ?? backoff.delay(afterAttempt: attempt, jitter: jitter)
        return .retry(runAt: now + max(delay, 0))
    }

    /// The state the job moves to.
    public var state: JobState {
        switch self {
        case .retry: .retrying
        case .fail: .failed
        }
    }
}
