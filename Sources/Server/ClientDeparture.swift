import Hummingbird
import HummingbirdCore
import NIOCore

/// Closes a connection once its client has shut its sending side. Hummingbird keeps such a
/// connection half open (so that a response can still be written), which would leave a
/// request whose client went away generating until its last token; closed, the request
/// sees its connection's close and aborts. HTTP/1.1 clients shut their side when they go
/// away, not while they wait for an answer, which is how other servers (uvicorn, under
/// vLLM) read it too.
final class ClientDeparture: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Any

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed = event as? ChannelEvent {
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }
}
