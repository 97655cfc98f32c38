// Package txclient is a service's side of golcn: the session with the
// TxManager, starting and deciding groups, the registry of held branches, and
// propagation of the group over HTTP.
//
// # Usage
//
// One Client per process:
//
//	client, err := txclient.New(txclient.Config{
//		ManagerURL: "ws://txmanager:8070/v1/ws",
//		Service:    "order",
//	})
//	if err != nil { ... }
//	defer client.Close()
//
// A participant wraps its HTTP server so that requests carrying the
// Lcn-Group-Id header run inside the group:
//
//	http.ListenAndServe(":9001", client.Middleware(mux))
//
// A caller wraps its HTTP client so that calls made with a group context
// carry the header:
//
//	hc := &http.Client{Transport: txclient.Transport(nil)}
//
// The starter runs its work in a group:
//
//	err := client.Do(ctx, func(ctx context.Context) error {
//		// database work with ctx through the golcn driver, and HTTP calls
//		// with ctx through hc, all join the group
//		return nil
//	})
//
// # Guarantees
//
// A held branch is committed or rolled back only when the TxManager says so,
// on a context detached from the request that did the work. If no decision
// arrives within AskInterval the client asks the TxManager, and keeps asking
// while it is unreachable; it never decides by its own clock. After a
// reconnect the client lists the branches it holds and the TxManager sends
// their decisions again.
//
// The client only ever connects to its configured ManagerURL (through
// Config.Dialer, if set). A message from the TxManager of a type the
// protocol does not have (a newer TxManager's, or a redirect such as
// TX-LCN's newTxManager) is logged and ignored: it is not acted on and does
// not end the session. Any other malformed frame ends the session, and the
// client reconnects to ManagerURL.
package txclient
