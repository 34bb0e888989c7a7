import HTTPTypes
import Hummingbird

/// Cross-origin resource sharing as vLLM configures it (Starlette's middleware with
/// `allow_origins`, every method and header, no credentials): a browser page served from
/// elsewhere may call the API. Preflights are answered before authorization, because
/// browsers never send credentials with them.
struct CrossOrigin: Sendable {
    /// Origins allowed, or `*` for any.
    let allowedOrigins: [String]

    static let methods = "GET, POST, HEAD, OPTIONS"
    static let allowOrigin = HTTPField.Name("Access-Control-Allow-Origin")!
    static let allowMethods = HTTPField.Name("Access-Control-Allow-Methods")!
    static let allowHeaders = HTTPField.Name("Access-Control-Allow-Headers")!
    static let maxAge = HTTPField.Name("Access-Control-Max-Age")!
    static let requestMethod = HTTPField.Name("Access-Control-Request-Method")!
    static let requestHeaders = HTTPField.Name("Access-Control-Request-Headers")!
    static let origin = HTTPField.Name("Origin")!

    /// The `Access-Control-Allow-Origin` value for a request from `origin`; nil when that
    /// origin is not allowed (the browser then withholds the answer from the page).
    func allowed(_ origin: String) -> String? {
        if allowedOrigins.contains("*") { return "*" }
        return allowedOrigins.contains(origin) ? origin : nil
    }

    /// A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) answered;
    /// nil for any other request.
    func preflight(_ request: Request) -> Response? {
        guard request.method == .options, let origin = request.headers[Self.origin], request.headers[Self.requestMethod] != nil else { return nil }
        guard let allowed = allowed(origin) else {
            return APIServer.errorResponse(APIError(.badRequest, "the origin \(origin) is not allowed (--allowed-origins)", type: "invalid_request_error"))
        }
        var headers = HTTPFields()
        headers[Self.allowOrigin] = allowed
        headers[Self.allowMethods] = Self.methods
        headers[Self.allowHeaders] = request.headers[Self.requestHeaders] ?? "*"
        headers[Self.maxAge] = "600"
        if allowed != "*" { headers[.vary] = "Origin" }
        return Response(status: .noContent, headers: headers)
    }

    /// Marks an answer to a request from an allowed origin as readable by its page.
    func mark(_ response: inout Response, for request: Request) {
        guard let origin = request.headers[Self.origin], let allowed = allowed(origin) else { return }
        response.headers[Self.allowOrigin] = allowed
        if allowed != "*" { response.headers[.vary] = "Origin" }
    }
}
