#!/usr/bin/env node
// PouchDB's side of the view benchmark of `make bench` (tools/bench_view.sh
// runs it and BUILDDIR/bench_view, barrelfs's side, and prints the report).
//
//   node bench_view.js [-n N] [-q Q]
//
// The same N documents as tools/bench_view.c (its top comment has the
// formula; keep both in step) go into an in-memory PouchDB
// (pouchdb-core, pouchdb-adapter-memory, pouchdb-mapreduce of
// tests/sync/node_modules) with bulkDocs of 1000, then the same design
// document _design/bench (view by_type: emit([doc.type, doc.n], doc.n),
// reduce _count), and it times the same phases:
//   index   the first db.query() (limit 0, reduce false): PouchDB builds
//           a persistent view there, never in the background (also the
//           CPU seconds of the process meanwhile);
//   map     Q range queries, reduce false: query q covers type
//           TYPE[q % 5], startkey [type, a], endkey [type, a + 499] with
//           a = (q * 7919) % (N - 499): exactly 100 rows;
//   docs    the same with include_docs true;
//   reduce  the same ranges reduced (_count), group_level 1;
//   group   the whole view reduced with group_level 1, 10 times.
// (bench_view.c's "bydoc" phase is barrelfs's own.) Queries use
// PouchDB's default freshness (update the view first, as barrelfs's
// update=true). Every answer is checked against the formula; a wrong one
// fails the run.
//
// Output: one "key=value" line per figure on stdout, the same keys as
// bench_view.c. Exit status 0; 1 when a call failed or an answer was
// wrong (why, on stderr); 2 on bad usage.
'use strict';

const path = require('path');

const modules = path.join(__dirname, '..', 'tests', 'sync', 'node_modules');
const PouchDB = require(path.join(modules, 'pouchdb-core'))
	.plugin(require(path.join(modules, 'pouchdb-adapter-memory')))
	.plugin(require(path.join(modules, 'pouchdb-mapreduce')));

const BATCH = 1000;
const SPAN = 500;
const TYPES = ['note', 'task', 'event', 'contact', 'photo'];
const ROWS = SPAN / TYPES.length;
const STEP = 7919;
const GROUP_RUNS = 10;
const TEXT_WORDS = 20;
const WORDS = [
	'alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf',
	'hotel', 'india', 'juliett', 'kilo', 'lima', 'mike', 'november',
	'oscar', 'papa', 'quebec', 'romeo', 'sierra', 'tango', 'uniform',
	'victor', 'whiskey', 'xray', 'yankee', 'zulu', 'amber', 'basalt',
	'cedar', 'dune', 'ember', 'fjord',
];
const VIEW = 'bench/by_type';
const DDOC = {
	_id: '_design/bench',
	language: 'javascript',
	views: {
		by_type: {
			map: 'function(doc){ if (doc.type) emit([doc.type, doc.n], doc.n); }',
			reduce: '_count',
		},
	},
};

function usage(code) {
	(code ? process.stderr : process.stdout).write(
		'usage: bench_view.js [-n DOCS] [-q QUERIES]\n');
	process.exit(code);
}

function number(s, min, max) {
	if (!/^[0-9]+$/.test(s || '') || Number(s) < min || Number(s) > max)
		usage(2);
	return Number(s);
}

function parseArgs(argv) {
	const o = { docs: 100000, queries: 1000 };

	for (let i = 0; i < argv.length; i += 2) {
		if (argv[i] === '-n')
			o.docs = number(argv[i + 1], SPAN, 1000000);
		else if (argv[i] === '-q')
			o.queries = number(argv[i + 1], 1, 1000000);
		else
			usage(argv[i] === '-h' || argv[i] === '--help' ? 0 : 2);
	}
	return o;
}

// ---- the documents ----

const word = (k) => WORDS[k % WORDS.length];
const pad2 = (v) => String(v).padStart(2, '0');
const div = (a, b) => Math.floor(a / b);

// Document i's body as JSON text, byte for byte bench_view.c's.
function body(i) {
	const text = [];

	for (let k = 0; k < TEXT_WORDS; k++)
		text.push(word(i * (k + 1) + k * k));
	return JSON.stringify({
		type: TYPES[i % TYPES.length],
		n: i,
		name: `${word(i * 7 + 1)} ${word(i * 13 + 3)} ${word(div(i, 32))}`,
		tags: [word(i), word(i * 3 + 5), word(div(i, 7))],
		created: `2024-${pad2(1 + i % 12)}-${pad2(1 + div(i, 12) % 28)}T` +
			`${pad2(i % 24)}:${pad2(i * 7 % 60)}:00Z`,
		text: text.join(' ') + '.',
	});
}

const docId = (i) => 'doc' + String(i).padStart(7, '0');

function fnv(h, s) {
	for (let i = 0; i < s.length; i++)
		h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
	return h;
}

async function load(db, n, out) {
	let hash = 2166136261;
	let bytes = 0;

	for (let first = 0; first < n; first += BATCH) {
		const docs = [];

		for (let i = first; i < Math.min(n, first + BATCH); i++) {
			const b = body(i);

			bytes += b.length;
			hash = fnv(hash, b);
			docs.push(Object.assign({ _id: docId(i) }, JSON.parse(b)));
		}
		const res = await db.bulkDocs(docs);
		const bad = res.find((r) => !r.ok);
		if (bad)
			throw new Error(`bulkDocs ${bad.id}: ${bad.error} ${bad.reason}`);
	}
	await db.put(DDOC);
	out.doc_bytes = bytes;
	out.doc_hash = hash.toString(16).padStart(8, '0');
}

// ---- the phases ----

const now = () => Number(process.hrtime.bigint()) / 1e9;

// Query q's range and the sum of its values.
function plan(n, queries) {
	const p = [];

	for (let q = 0; q < queries; q++) {
		const t = q % TYPES.length;
		const a = q * STEP % (n - SPAN + 1);
		let sum = 0;

		for (let i = a; i < a + SPAN; i++)
			sum += i % TYPES.length === t ? i : 0;
		p.push({ start: [TYPES[t], a], end: [TYPES[t], a + SPAN - 1], sum });
	}
	return p;
}

// CPU seconds of the process (every thread) so far.
function cpu() {
	const u = process.cpuUsage();

	return (u.user + u.system) / 1e6;
}

async function index(db, n, out) {
	const c0 = cpu();
	const t0 = now();
	const res = await db.query(VIEW, { reduce: false, limit: 0 });

	out.index_s = now() - t0;
	out.index_cpu_s = cpu() - c0;
	if (res.total_rows !== n)
		throw new Error(`index: ${res.total_rows} rows, want ${n}`);
}

// The plan's ranges with opts; rows, the sum of values, docs; timed.
async function ranges(db, p, opts) {
	const tally = { rows: 0, sum: 0, docs: 0 };
	const t0 = now();

	for (const r of p) {
		const res = await db.query(VIEW, Object.assign({
			startkey: r.start, endkey: r.end }, opts));

		for (const row of res.rows) {
			tally.rows++;
			tally.sum += row.value;
			tally.docs += row.doc ? 1 : 0;
		}
	}
	tally.secs = now() - t0;
	return tally;
}

async function group(db) {
	const t0 = now();
	let res;

	for (let i = 0; i < GROUP_RUNS; i++)
		res = await db.query(VIEW, { group_level: 1 });
	return {
		secs: now() - t0,
		rows: res.rows.length,
		sum: res.rows.reduce((s, r) => s + r.value, 0),
		text: res.rows.map((r) => `${JSON.stringify(r.key)}=${r.value};`)
			.join(''),
	};
}

function check(cond, what) {
	if (!cond)
		throw new Error(`wrong answer: ${what}`);
}

async function main() {
	const o = parseArgs(process.argv.slice(2));
	const db = new PouchDB('bench', { adapter: 'memory' });
	const out = {};
	const p = plan(o.docs, o.queries);
	const want = p.reduce((s, r) => s + r.sum, 0);
	const rows = o.queries * ROWS;
	const t0 = now();

	await load(db, o.docs, out);
	out.load_s = now() - t0;
	await index(db, o.docs, out);
	const map = await ranges(db, p, { reduce: false });
	const docs = await ranges(db, p, { reduce: false, include_docs: true });
	const red = await ranges(db, p, { group_level: 1 });
	const grp = await group(db);

	check(map.rows === rows && map.sum === want, `map: ${map.rows} rows`);
	check(docs.rows === rows && docs.docs === rows && docs.sum === want,
		`include_docs: ${docs.rows} rows, ${docs.docs} docs`);
	check(red.rows === o.queries && red.sum === rows,
		`reduce: ${red.rows} rows, count ${red.sum}`);
	check(grp.rows === TYPES.length && grp.sum === o.docs,
		`group: ${grp.rows} rows, count ${grp.sum}`);
	const lines = [
		'side=pouchdb', `docs=${o.docs}`, `doc_bytes=${out.doc_bytes}`,
		`doc_hash=${out.doc_hash}`, `queries=${o.queries}`,
		`load_s=${out.load_s.toFixed(6)}`, `index_s=${out.index_s.toFixed(6)}`,
		`index_cpu_s=${out.index_cpu_s.toFixed(6)}`,
		`map_s=${map.secs.toFixed(6)}`, `docs_s=${docs.secs.toFixed(6)}`,
		`reduce_s=${red.secs.toFixed(6)}`, `group_s=${grp.secs.toFixed(6)}`,
		`group_runs=${GROUP_RUNS}`, `map_rows=${map.rows}`,
		`map_sum=${map.sum}`, `docs_rows=${docs.docs}`,
		`reduce_count=${red.sum}`, `group=${grp.text}`,
	];
	process.stdout.write(lines.join('\n') + '\n');
}

main().catch((err) => {
	process.stderr.write(`bench_view.js: ${err && err.stack || err}\n`);
	process.exit(1);
});
