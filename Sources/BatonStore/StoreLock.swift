#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An exclusive claim on a store file, held for as long as the process keeps it open.
///
/// SQLite's own locks let two processes write the same database in turn; Baton needs
/// more: one authority, or leases and tokens would be handed out twice. An advisory
/// `flock` on a sidecar file is released by the kernel when the holder dies, even by
/// `kill -9`, so a crashed `batond` never blocks its successor.
public final class StoreLock: Sendable {
    private let descriptor: Int32
    public let path: String

    /// Takes the lock, or fails at once if another process holds it.
    ///
    /// - Throws: ``StoreError`` naming the holder's pid when the store is taken.
    public init(path: String) throws(StoreError) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw StoreError("cannot open lock file \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = Self.readPID(fd).map { " by pid \($0)" } ?? ""
            close(fd)
            throw StoreError("the store is already in use\(holder) (lock file \(path)); only one batond may own a store")
        }
        // Record our pid so that the next one to fail can say who holds it.
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
        self.descriptor = fd
        self.path = path
    }

    private static func readPID(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 31, 0) }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[..<count], as: UTF8.self)
        return Int32(text.trimmingCharacters(in: " \n"))
    }

    deinit {
        flock(self.descriptor, LOCK_UN)
        close(self.descriptor)
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> Substring {
        let characters = Set(set)
        var slice = self[...]
        while let first = slice.first, characters.contains(first) { slice.removeFirst() }
        while let last = slice.last, characters.contains(last) { slice.removeLast() }
        return slice
    }
}
