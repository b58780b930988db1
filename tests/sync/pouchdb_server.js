#!/usr/bin/env node
// The PouchDB peer of the sync tests: an in-memory PouchDB served over
// CouchDB's HTTP API by express-pouchdb's own app.
//
//   node pouchdb_server.js [PORT]
//
// Listens on 127.0.0.1:PORT (0 or none: a free port), prints
// "listening on http://127.0.0.1:PORT" on stdout once it accepts
// connections, and nothing else. The data lives in memory only and
// express-pouchdb runs in its "minimumForPouchDB" mode, which has no
// config or log infrastructure: the server writes no file anywhere.
// SIGTERM or SIGINT closes it; exit status 0, or 1 when it cannot listen.
//
// One endpoint is added to express-pouchdb's: GET /{db}/_local_docs
// (CouchDB 2.2+), which the memory adapter cannot list. The server notes
// every _local/{id} written through it and lists those that still exist,
// sorted, as CouchDB does: {"rows": [{"id", "key", "value": {"rev"}}]}.
// The tests find replication checkpoints with it.
'use strict';

const express = require('express');
const expressPouchDB = require('express-pouchdb');
const PouchDB = require('pouchdb-core')
	.plugin(require('pouchdb-adapter-memory'))
	.plugin(require('pouchdb-adapter-http'))
	.plugin(require('pouchdb-mapreduce'))
	.plugin(require('pouchdb-replication'));

function usage() {
	process.stderr.write('usage: pouchdb_server.js [PORT]\n');
	process.exit(2);
}

const args = process.argv.slice(2);
if (args.length > 1 || (args.length === 1 && !/^[0-9]+$/.test(args[0])))
	usage();
const port = args.length ? Number(args[0]) : 0;
if (port > 65535)
	usage();

const MemPouchDB = PouchDB.defaults({ adapter: 'memory' });
const app = express();
const localIds = new Map();      // db name -> Set of "_local/..." written

// Note the _local/{id} of every write, before express-pouchdb serves it.
app.use((req, res, next) => {
	const m = /^\/([^/]+)\/_local\/(.+)$/.exec(req.path);
	if (m && (req.method === 'PUT' || req.method === 'POST')) {
		const db = decodeURIComponent(m[1]);
		if (!localIds.has(db))
			localIds.set(db, new Set());
		localIds.get(db).add('_local/' + decodeURIComponent(m[2]));
	}
	next();
});

app.get('/:db/_local_docs', async (req, res) => {
	const rows = [];
	try {
		if (!(await MemPouchDB.allDbs()).includes(req.params.db)) {
			res.status(404).json({ error: 'not_found',
				reason: 'no_db_file' });
			return;
		}
		const db = new MemPouchDB(req.params.db);
		const ids = [...(localIds.get(req.params.db) || [])].sort();
		for (const id of ids) {
			const doc = await db.get(id).catch(() => null);
			if (doc)
				rows.push({ id, key: id, value: { rev: doc._rev } });
		}
		res.json({ total_rows: null, offset: null, rows });
	} catch (err) {
		res.status(err.status || 500).json({
			error: err.name || 'error', reason: err.message });
	}
});

app.use('/', expressPouchDB(MemPouchDB, {
	mode: 'minimumForPouchDB',
	inMemoryConfig: true,
}));

const server = app.listen(port, '127.0.0.1', () => {
	const addr = server.address();
	process.stdout.write(`listening on http://127.0.0.1:${addr.port}\n`);
});
server.on('error', (err) => {
	process.stderr.write(`pouchdb_server: ${err.message}\n`);
	process.exit(1);
});

function stop() {
	server.close(() => process.exit(0));
	// Open keep-alive connections would hold close() back.
	if (server.closeAllConnections)
		server.closeAllConnections();
	setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
