/// An increasing sequence (job ids, fencing tokens) whose durable high-water mark is
/// written once per block instead of once per value.
///
/// The store records only the end of the block handed out; values are issued from memory.
/// After a crash the sequence resumes past the recorded end, skipping what was left of
/// the block, so a value is never issued twice and the sequence never goes back, at the
/// cost of one small write per `blockSize` values instead of one per commit.
public struct ReservedSequence: Hashable, Sendable {
    /// The last value issued.
    public private(set) var last: Int64
    /// The highest value the store allows to be issued without a new reservation.
    public private(set) var reserved: Int64
    public let blockSize: Int64

    /// Resumes after a durable reservation (and after any value already seen in use).
    public init(resumingAfter reserved: Int64, blockSize: Int64 = 1_024) {
        self.last = reserved
        self.reserved = reserved
        self.blockSize = blockSize
    }

    /// Issues the next value.
    ///
    /// - Returns: the value, and the new reservation to persist in the same commit as the
    ///   value's first use, when the block ran out.
    public mutating func next() -> (value: Int64, reservation: Int64?) {
        self.last += 1
        guard self.last > self.reserved else {
            return (self.last, nil)
        }
        self.reserved = self.last + self.blockSize - 1
        return (self.last, self.reserved)
    }
}
