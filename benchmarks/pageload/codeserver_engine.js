// code-server's proxy engine as code-server runs it, without the rest of code-server:
// the `compression` middleware first (code-server's app.ts mounts compression() before every
// route, so it also compresses proxied responses), then one http-proxy server created with no
// options (no upstream keep-alive agent) and proxy.web() with ignorePath and a per-request
// target for /proxy/<port>/..., plus the Location rewrite of routes/pathProxy.ts.
// Written for this benchmark from the behaviour described in the project's reference notes.
// code-server serves HTTP/1.1 only (httpolyglot over https), so this listens on plain HTTP/1.1.
// With CERT and KEY it serves HTTPS (HTTP/1.1, as code-server's --cert does).
// Usage: NODE_PATH=<dir>/node_modules node codeserver_engine.js PORT HOST [CERT KEY]
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');
const compression = require('compression');
const httpProxy = require('http-proxy');

const port = Number(process.argv[2]);
const host = process.argv[3] || '127.0.0.1';
const compress = compression();
const proxy = httpProxy.createProxyServer({});

proxy.on('error', (error, _req, res) => {
  if (!res.headersSent) res.writeHead(500);
  res.end(error.message);
});
proxy.on('proxyRes', (res, req) => {
  if (res.headers.location && res.headers.location.startsWith('/') && req.base) {
    res.headers.location = req.base + res.headers.location;
  }
});

const ROUTE = /^\/proxy\/(\d+)(\/[^?]*)?(\?.*)?$/i;

function handle(req, res) {
  compress(req, res, () => {
    const m = ROUTE.exec(req.url);
    if (!m) {
      res.writeHead(404);
      res.end('not found');
      return;
    }
    req.base = req.url.slice(0, req.url.indexOf(m[1]) + m[1].length);
    const target = `http://127.0.0.1:${parseInt(m[1], 10)}${m[2] || '/'}${m[3] || ''}`;
    proxy.web(req, res, { ignorePath: true, target });
  });
}

const server = process.argv[4]
  ? https.createServer(
      { cert: fs.readFileSync(process.argv[4]), key: fs.readFileSync(process.argv[5]) },
      handle,
    )
  : http.createServer(handle);
server.listen(port, host, () => console.log(`code-server engine listening on ${host}:${port}`));
