package statuspage

import (
	"crypto/sha256"
	_ "embed" // the page's parts
	"encoding/base64"
	"strings"
)

// The page is page.html with page.css and page.js put inline, built once.
var (
	//go:embed page.html
	pageHTML string
	//go:embed page.css
	pageCSS string
	//go:embed page.js
	pageJS string

	page = buildPage(pageHTML, pageCSS, pageJS)
)

// builtPage is the page served and the Content-Security-Policy served with it.
type builtPage struct {
	body []byte
	csp  string
}

// buildPage puts css and js into html, in place of its {{style}} and
// {{script}} markers, and returns it with a Content-Security-Policy that
// allows exactly that style and that script (by their SHA-256), fetches of
// the page's own origin and nothing else: data that slipped into the page as
// markup could run nothing.
func buildPage(html, css, js string) builtPage {
	body := strings.NewReplacer("{{style}}", css, "{{script}}", js).Replace(html)
	csp := "default-src 'none'; script-src " + sourceHash(js) + "; style-src " + sourceHash(css) +
		"; connect-src 'self'; base-uri 'none'; form-action 'none'"
	return builtPage{body: []byte(body), csp: csp}
}

// sourceHash returns the CSP source expression that allows an inline
// element whose text is s.
func sourceHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}
