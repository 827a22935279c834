extension Dictionary {
    /// Changes the value stored for `key`, if there is one, where it is stored.
    ///
    /// Optional chaining (`dictionary[key]?.jobs.insert(job)`) reads like this but copies a
    /// collection held in the value on every call: three allocations for a set, on paths
    /// every claim and completion take.
    @inlinable
    package mutating func modifyValue(forKey key: Key, _ change: (inout Value) -> Void) {
        guard let index = self.index(forKey: key) else { return }
        change(&self.values[index])
    }
}
