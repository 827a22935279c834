/// The seven states a job can be in, and the only moves between them.
///
/// The table in ``allowedTargets`` is the whole state machine. The store's writes are
/// held to it: those with fixed starting states are declared as ``JobMove``s (checked
/// against this table by a test, and written into each write's SQL guard), and those that
/// start from a state the caller read (cancel, pause, retry) check that state, so a move
/// that is not listed here is refused with `invalid_transition` instead of being applied.
public enum JobState: String, Sendable, CaseIterable, Codable {
    /// Waiting to be claimed, possibly not before its `run_at`.
    case queued
    /// Leased to a worker; only the holder of the current fencing token may change it.
    case running
    /// Held back by an operator; keeps its checkpoint and goes back to `queued` on resume.
    case paused
    /// Failed or expired with attempts left; claimable again once its backoff has passed.
    case retrying
    /// Finished successfully.
    case completed
    /// Finished unsuccessfully: attempts used up, or the worker said not to retry.
    case failed
    /// Stopped by an operator.
    case cancelled

    /// The states a job may move to from this one.
    public var allowedTargets: Set<JobState> {
        switch self {
        case .queued: [.running, .paused, .cancelled]
        // `queued` is `release`: the worker hands the job back without spending an attempt.
        case .running: [.completed, .retrying, .failed, .queued, .paused, .cancelled]
        case .retrying: [.running, .failed, .paused, .cancelled]
        case .paused: [.queued, .cancelled]
        // Only an explicit operator retry reopens a finished job; a completed job is final.
        case .failed, .cancelled: [.queued]
        case .completed: []
        }
    }

    /// Whether the state machine allows moving from this state to `target`.
    ///
    /// Written as a switch, not a lookup in ``allowedTargets``, because it runs on every
    /// write and a set literal allocates.
    public func canMove(to target: JobState) -> Bool {
        switch (self, target) {
        case (.queued, .running), (.queued, .paused), (.queued, .cancelled),
            (.running, .completed), (.running, .retrying), (.running, .failed), (.running, .queued),
            (.running, .paused), (.running, .cancelled),
            (.retrying, .running), (.retrying, .failed), (.retrying, .paused), (.retrying, .cancelled),
            (.paused, .queued), (.paused, .cancelled),
            (.failed, .queued), (.cancelled, .queued):
            true
        default:
            false
        }
    }

    /// Checks a move against the state machine.
    ///
    /// - Throws: ``InvalidTransition`` when the move is not allowed.
    public func checkMove(to target: JobState) throws(InvalidTransition) {
        guard self.canMove(to: target) else {
            throw InvalidTransition(from: self, to: target)
        }
    }

    /// Whether the job has reached an end: nothing will run it again without an operator.
    public var isFinished: Bool {
        switch self {
        case .completed, .failed, .cancelled: true
        case .queued, .running, .paused, .retrying: false
        }
    }

    /// Whether a worker may claim a job in this state once its `run_at` has passed.
    public var isClaimable: Bool {
        self == .queued || self == .retrying
    }
}

/// A move the state machine does not allow.
public struct InvalidTransition: Error, Hashable, Sendable, CustomStringConvertible {
    public var from: JobState
    public var to: JobState

    public init(from: JobState, to: JobState) {
        self.from = from
        self.to = to
    }

    public var description: String {
        "a \(self.from.rawValue) job cannot become \(self.to.rawValue)"
    }
}
