#!/usr/bin/env node
// The byte counter of the sync benchmark (tools/bench_sync.sh): a TCP
// proxy on 127.0.0.1 that forwards to one or more local ports and counts
// the bytes that go through it, both ways.
//
//   node bench_sync_proxy.js PORT [PORT...]
//
// For each PORT it listens on a free port of 127.0.0.1 and forwards every
// connection to 127.0.0.1:PORT; it prints one line per PORT,
// "proxy LISTEN PORT", then "ready", on stdout. On SIGUSR2 it prints
// "bytes UP DOWN CONNS PORT:UP:DOWN:CONNS...": the bytes read from the
// clients (UP, requests) and from the servers (DOWN, replies), and the
// connections accepted, over every PORT, then for each PORT, since the
// last such line (or the start); and starts counting again. A byte is counted when the proxy reads it, before it
// forwards it: once a client has exited, everything it sent or received
// was counted. SIGTERM or SIGINT closes it (exit 0); exit 1 when it
// cannot listen, 2 on a usage error. It needs node's core modules only.
'use strict';

const net = require('net');

const ports = process.argv.slice(2);
if (!ports.length || !ports.every((p) => /^[0-9]+$/.test(p) &&
	Number(p) > 0 && Number(p) < 65536)) {
	process.stderr.write('usage: bench_sync_proxy.js PORT [PORT...]\n');
	process.exit(2);
}

const count = new Map();         // PORT -> {up, down, conns}
const servers = [];
const sockets = new Set();

// Forward client to 127.0.0.1:port and back, counting both ways; either
// side's end or error closes both.
function forward(client, port) {
	const server = net.connect(port, '127.0.0.1');
	const n = count.get(port);

	n.conns++;
	sockets.add(client);
	sockets.add(server);
	client.setNoDelay(true);
	server.setNoDelay(true);
	client.on('data', (b) => { n.up += b.length; });
	server.on('data', (b) => { n.down += b.length; });
	client.pipe(server);
	server.pipe(client);
	const close = () => {
		client.destroy();
		server.destroy();
		sockets.delete(client);
		sockets.delete(server);
	};
	client.on('error', close);
	server.on('error', close);
	client.on('close', close);
	server.on('close', close);
}

function listenAll(i) {
	if (i === ports.length) {
		process.stdout.write('ready\n');
		return;
	}
	const port = Number(ports[i]);
	count.set(port, { up: 0, down: 0, conns: 0 });
	const s = net.createServer((c) => forward(c, port));
	s.on('error', (err) => {
		process.stderr.write(`bench_sync_proxy: ${err.message}\n`);
		process.exit(1);
	});
	s.listen(0, '127.0.0.1', () => {
		process.stdout.write(`proxy ${s.address().port} ${port}\n`);
		servers.push(s);
		listenAll(i + 1);
	});
}

process.on('SIGUSR2', () => {
	const t = { up: 0, down: 0, conns: 0 };
	let each = '';

	for (const [port, n] of count) {
		t.up += n.up;
		t.down += n.down;
		t.conns += n.conns;
		each += ` ${port}:${n.up}:${n.down}:${n.conns}`;
		n.up = n.down = n.conns = 0;
	}
	process.stdout.write(`bytes ${t.up} ${t.down} ${t.conns}${each}\n`);
});

function stop() {
	for (const s of servers)
		s.close();
	for (const c of sockets)
		c.destroy();
	process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

listenAll(0);
