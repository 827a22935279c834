/// One page of `list`: which jobs, from which cursor, how many, in which order.
///
/// Pages walk the primary key from the cursor. A filter on the last error's text cannot
/// use an index, so such a page looks at most at the next ``scanLimit`` jobs (of its queue
/// and state) past the cursor: it may come back short, or empty, with a cursor to go on
/// from, and the text is matched against no more than that many.
public struct JobListing: Hashable, Sendable {
    public var queue: String?
    public var state: JobState?
    /// Only jobs whose `last_error` contains this text.
    public var errorContains: String?
    /// The cursor: the id of the last job of the previous page.
    public var after: Int64?
    public var limit: Int
    public var oldestFirst: Bool

    /// How many ids past the cursor a page filtered by error text reads at most.
    public static let scanLimit = 10_000

    public init(
        queue: String? = nil, state: JobState? = nil, errorContains: String? = nil, after: Int64? = nil, limit: Int = 100,
        oldestFirst: Bool = false
    ) {
        self.queue = queue
        self.state = state
        self.errorContains = errorContains
        self.after = after
        self.limit = limit
        self.oldestFirst = oldestFirst
    }

    /// Where the page starts, exclusive: past either end of the ids without a cursor.
    public var start: Int64 { self.after ?? (self.oldestFirst ? 0 : .max) }

    /// The cursor for the page after this one, or `nil` when this is the last.
    ///
    /// - Parameters:
    ///   - found: the ids of the jobs on this page, in page order.
    ///   - scanEnd: for a page filtered by error text, the last id it read when it stopped
    ///     at ``scanLimit`` ids; `nil` when it read to the end.
    public func next(found: [Int64], scanEnd: Int64?) -> Int64? {
        // A full page may have more after it; a short one is the last, unless its scan stopped early.
        found.count == self.limit ? found.last : scanEnd
    }
}
