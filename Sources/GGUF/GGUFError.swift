/// A GGUF file (or the model metadata inside one) that cannot be trusted.
///
/// `field` names what was wrong (a metadata key, a tensor name, or a header field such as
/// `header.tensor_count`); `problem` says how. Nothing in a bad file ever reaches a trap.
public struct GGUFError: Error, Equatable, CustomStringConvertible, Sendable {
    public let field: String
    public let problem: String

    public init(field: String, _ problem: String) {
        self.field = field
        self.problem = problem
    }

    public var description: String { "invalid GGUF: \(field): \(problem)" }
}
