// Package uitest holds the browser tests of the TxManager's admin page
// (txmanager/adminui). It has no code of its own outside its tests.
//
// The tests drive Debian's chromium headless from Go with
// github.com/chromedp/chromedp:
//
//   - TestAdminPageAgainstTxManager runs a real TxManager (txmanager.New
//     over a real store, with the page mounted) and real groups made over
//     the websocket protocol: a rolled-back group and a committed group
//     whose lcn branch was lost (so that a compensation marker exists). It
//     logs in, finds the rolled-back group, opens its timeline, retries and
//     resolves the compensation and sees it resolved.
//   - TestAdminPageRendersHostileDataAsText runs the page against a small
//     fake of the REST API that serves markup and script in every field and
//     answers errors, and checks in the browser that nothing is executed and
//     that the API's error messages are shown.
//
// Every step saves a PNG screenshot into the directory named by
// LCN_UI_ARTIFACTS (a temporary directory when unset); the paths are logged.
//
// The browser is /usr/bin/chromium, or the path in LCN_CHROMIUM. When it is
// missing the tests skip with a message starting "INTEGRATION TEST SKIPPED";
// with LCN_REQUIRE_INTEGRATION=1 they fail instead.
package uitest
