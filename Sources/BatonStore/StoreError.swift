/// A store that cannot be opened or used, with a message for the operator.
public struct StoreError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    /// Whether it failed for lack of disk space, which freeing space cures.
    public var isStorageFull: Bool

    public init(_ message: String, storageFull: Bool = false) {
        self.message = message
        self.isStorageFull = storageFull
    }

    public var description: String { self.message }
}
