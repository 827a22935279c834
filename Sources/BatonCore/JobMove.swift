/// A kind of write to a job's state: the states it may find the job in, and the one it
/// leaves it in.
///
/// The store declares each write whose starting states are fixed as one of these, and
/// writes its SQL guard from ``from``: a row in any other state is left alone. So what a
/// write may do is read off the state machine's table (``JobState/canMove(to:)``) once, in
/// `JobMoveTests`, instead of being checked on a constant at every call. Writes that start
/// from a state the caller read (cancel, pause, retry) check that state at the call.
public struct JobMove: Hashable, Sendable, CustomStringConvertible {
    /// The states the write may find the job in.
    public let from: [JobState]
    /// The state the write leaves the job in.
    public let to: JobState

    public init(from: [JobState], to: JobState) {
        self.from = from
        self.to = to
    }

    /// Whether the state machine allows the move from each of its starting states.
    public var isAllowed: Bool {
        !self.from.isEmpty && self.from.allSatisfy { $0.canMove(to: self.to) }
    }

    public var description: String {
        "\(self.from.map(\.rawValue).joined(separator: "|")) → \(self.to.rawValue)"
    }

    /// A claim: a waiting job, first attempt or retry, starts running.
    public static let claim = JobMove(from: [.queued, .retrying], to: .running)
    /// The lease holder's `complete`.
    public static let complete = JobMove(from: [.running], to: .completed)
    /// The lease holder's `fail`, or an expired lease, with attempts left.
    public static let retry = JobMove(from: [.running], to: .retrying)
    /// The lease holder's `fail`, or an expired lease, with none left (or no retry asked).
    public static let fail = JobMove(from: [.running], to: .failed)
    /// The lease holder's `release`: back to waiting, the attempt given back.
    public static let release = JobMove(from: [.running], to: .queued)
    /// An operator's `resume` of a paused job.
    public static let resume = JobMove(from: [.paused], to: .queued)

    /// Every move the store declares, for the test that holds them to the table.
    public static let declared: [JobMove] = [.claim, .complete, .retry, .fail, .release, .resume]
}

extension JobMove {
    /// The SQL condition that holds only for a row in one of the move's starting states:
    /// both stores guard their writes with it.
    public var sqlGuard: String {
        self.from.count == 1
            ? "state = '\(self.from[0].rawValue)'"
            : "state IN (" + self.from.map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")"
    }
}
