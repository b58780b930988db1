#!/usr/bin/env node
// PouchDB's own replicator, one shot, between two CouchDB-API URLs.
//
//   node pouch_replicate.js [--create-target] SRC_URL DST_URL
//
// Prints the replication result as one JSON object on stdout. Exit 0 when
// the replication completed with no document failing to write; 1 when it
// failed or some documents were not written (the result, or the error,
// says why); 2 on a usage error. Without --create-target a missing target
// database is an error (PouchDB's http adapter would create it).
'use strict';

const PouchDB = require('pouchdb-core')
	.plugin(require('pouchdb-adapter-http'))
	.plugin(require('pouchdb-replication'));

function usage() {
	process.stderr.write(
		'usage: pouch_replicate.js [--create-target] SRC_URL DST_URL\n');
	process.exit(2);
}

const args = process.argv.slice(2);
let create = false;
if (args[0] === '--create-target') {
	create = true;
	args.shift();
}
if (args.length !== 2 || !args.every((a) => /^https?:\/\//.test(a)))
	usage();

function errorJSON(err) {
	return {
		ok: false,
		status: err.status,
		name: err.name,
		error: err.error,
		reason: err.reason || err.message,
	};
}

async function main(srcURL, dstURL) {
	const src = new PouchDB(srcURL, { skip_setup: true });
	const dst = new PouchDB(dstURL, { skip_setup: !create });
	const result = await PouchDB.replicate(src, dst, {
		batch_size: 100,
		retry: false,
	});
	process.stdout.write(JSON.stringify(result) + '\n');
	const failed = result.doc_write_failures || 0;
	if (!result.ok || failed > 0 || result.status !== 'complete') {
		process.stderr.write(`pouch_replicate: ${failed} failures, ` +
			`status ${result.status}\n`);
		return 1;
	}
	return 0;
}

main(args[0], args[1]).then((rc) => process.exit(rc), (err) => {
	process.stdout.write(JSON.stringify(errorJSON(err)) + '\n');
	process.stderr.write(`pouch_replicate: ${err.reason || err.message}\n`);
	process.exit(1);
});
