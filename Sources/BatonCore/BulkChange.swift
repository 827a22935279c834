/// A change to every job a filter matches: `retry`, `cancel` or `purge` of one queue's jobs
/// in one state, optionally only those whose last error contains some text.
///
/// It runs in steps, one per commit, each looking at a bounded range of job ids (the
/// primary key) and changing at most a bounded number of jobs, so that however many jobs it
/// changes, the claims and completions that arrive meanwhile are served between its steps.
/// Each step applies whole or not at all; the jobs it changes are the ones a single-job
/// `retry`, `cancel` or a retention delete would change, with the same audit trail.
public struct BulkChange: Hashable, Sendable {
    public enum Action: String, Hashable, Sendable {
        case retry, cancel, purge

        /// The states a job may be changed from: retry reopens finished jobs that did not
        /// complete, cancel stops jobs not yet running, purge deletes finished jobs.
        public var states: [JobState] {
            switch self {
            case .retry: [.failed, .cancelled]
            case .cancel: [.queued, .retrying, .paused]
            case .purge: [.completed, .failed, .cancelled]
            }
        }
    }

    public var action: Action
    public var queue: String
    public var state: JobState
    /// Only jobs whose `last_error` contains this text.
    public var errorContains: String?
    /// The most jobs to change; `nil` for all that match.
    public var limit: Int?
    /// For `cancel`: stored as each job's last error.
    public var reason: String?

    public init(action: Action, queue: String, state: JobState, errorContains: String? = nil, limit: Int? = nil, reason: String? = nil) {
        self.action = action
        self.queue = queue
        self.state = state
        self.errorContains = errorContains
        self.limit = limit
        self.reason = reason
    }

    /// Job ids one step looks at.
    public static let idsPerStep: Int64 = 1_000
    /// Jobs one step changes at most.
    public static let changesPerStep = 100

    /// How far a bulk change has got.
    public struct Progress: Hashable, Sendable {
        public let change: BulkChange
        /// The highest job id when the change began: jobs added later are not its business.
        public let lastID: Int64
        /// Every id up to this one has been looked at.
        public private(set) var cursor: Int64 = 0
        public private(set) var changed = 0

        public init(_ change: BulkChange, lastID: Int64) {
            self.change = change
            self.lastID = lastID
        }

        public var isDone: Bool {
            self.cursor >= self.lastID || self.changed >= (self.change.limit ?? .max)
        }

        /// The next step: the ids after the cursor to look at, and how many jobs it may change.
        public var nextStep: (after: Int64, through: Int64, limit: Int) {
            let limit = min(BulkChange.changesPerStep, (self.change.limit ?? .max) - self.changed)
            return (self.cursor, min(self.cursor + BulkChange.idsPerStep, self.lastID), limit)
        }

        /// Records a step that matched `matched` jobs (in id order, at most its limit) and
        /// changed `changed` of them.
        public mutating func stepped(matched: [Int64], changed: Int) {
            let step = self.nextStep
            // A full step may have left matches behind in its range: go on after the last.
            self.cursor = matched.count == step.limit ? matched.last ?? step.through : step.through
            self.changed += changed
        }
    }
}
