"""The gRPC edge: servicers (thin: proto → domain → proto) and the interceptor around them."""
