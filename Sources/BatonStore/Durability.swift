/// How hard a commit works to survive a crash.
public enum Durability: String, Sendable, CaseIterable {
    /// Every commit is fsync'd before it is acknowledged: nothing acknowledged is ever lost.
    case full
    /// Commits reach the OS but are fsync'd only at WAL checkpoints: a process crash loses
    /// nothing, a power loss may lose the last moments.
    case normal

    var synchronousPragma: String {
        switch self {
        case .full: "FULL"
        case .normal: "NORMAL"
        }
    }
}
