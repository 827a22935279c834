/// The number that makes a lease unforgeable by time.
///
/// Every claim is given a token strictly greater than every token the store has ever
/// issued, across restarts. A write that carries an older token comes from a worker whose
/// lease was lost and re-granted, so it is refused: fencing is what turns "at most one
/// live lease" into "at most one worker can change the job".
public struct FencingToken: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: Int64

    public init(rawValue: Int64) {
        self.rawValue = rawValue
    }

    /// The token after this one.
    public func next() -> FencingToken {
        FencingToken(rawValue: self.rawValue + 1)
    }

    public static func < (lhs: FencingToken, rhs: FencingToken) -> Bool {
        lhs.rawValue < rhs.rawValue
    }

    public var description: String { String(self.rawValue) }
}
