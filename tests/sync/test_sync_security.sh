#!/bin/bash
# Proves the TCP listener's safety rules (PRODUCT.md "Sync": TCP is off
# unless asked for, a non-loopback listener requires authentication, TLS
# is supported): `barrel-syncd passwd` writes hashes, not passwords;
# basic authentication answers 401 without or with a wrong password and
# 200 with the right one; listen=0.0.0.0 without passwd= refuses to start
# and says why; HTTPS with a self-signed certificate; and after a batch of
# malformed requests (garbage, bad JSON, an oversized header, truncated
# bodies) the daemon still answers GET / with 200.
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
sync_init test_sync_security

pw=$tmp/passwd

# set_password USER PASSWORD: barrel-syncd passwd, password on stdin.
set_password() {
	printf '%s\n' "$2" | "$syncd" passwd "$pw" "$1"
}

# barrel-syncd passwd writes one USER:HASH line per user, never the
# password, and replaces a user's older line.
t_passwd() {
	set_password alice 'open sesame'
	set_password bob hunter2
	set_password alice 'Open Sesame!'
	[ "$(grep -c '^alice:' "$pw")" -eq 1 ] || die "alice: $(cat "$pw")"
	[ "$(grep -c '^bob:' "$pw")" -eq 1 ] || die "bob: $(cat "$pw")"
	[ "$(wc -l <"$pw")" -eq 2 ] || die "not 2 lines: $(cat "$pw")"
	! grep -Eq 'sesame|Sesame|hunter2' "$pw" || die "a password in clear: $(cat "$pw")"
	grep -Eq '^alice:\$[a-z0-9]+\$' "$pw" || die "not a crypt(3) hash: $(cat "$pw")"
	expect_fail "a user name with ':'" set_password 'a:b' x
	expect_fail "an empty password" set_password carol ''
	[ "$(wc -l <"$pw")" -eq 2 ] || die "refused users were written: $(cat "$pw")"
}
run_case t_passwd "barrel-syncd passwd writes hashes"

t_start_auth() {
	syncd_start auth "listen=127.0.0.1:0,passwd=$pw"
}
run_step t_start_auth "barrel-syncd starts with listen= and passwd="
A=${syncd_url[auth]:-}

# Basic authentication: none or wrong is 401 (CouchDB's error body),
# right is 200, for reads and writes.
t_auth() {
	expect_status 401 GET "$A" /
	jq -e '.error == "unauthorized"' "$work/reply" >/dev/null ||
		die "401 without CouchDB's body: $(cat "$work/reply")"
	expect_status 401 GET "$A" / -u 'alice:open sesame'
	expect_status 401 GET "$A" / -u 'alice:'
	expect_status 401 GET "$A" / -u 'mallory:Open Sesame!'
	expect_status 401 GET "$A" / -H 'Authorization: Basic !!notbase64'
	expect_status 401 PUT "$A" /secret
	expect_status 200 GET "$A" / -u 'alice:Open Sesame!'
	expect_status 200 GET "$A" / -u 'bob:hunter2'
	expect_status 201 PUT "$A" /secret -u 'bob:hunter2'
	expect_status 401 GET "$A" /secret
	expect_status 401 GET "$A" /_all_dbs -u 'bob:wrong'
	expect_status 200 GET "$A" /_all_dbs -u 'bob:hunter2'
	jq -e 'index("secret") != null' "$work/reply" >/dev/null ||
		die "_all_dbs: $(cat "$work/reply")"
}
run_case t_auth "basic authentication: 401 without or wrong, 200 right"

# listen=0.0.0.0 without passwd= does not start, and names the reason;
# with passwd= it starts and authenticates.
t_wildcard() {
	local rc=0

	mkdir -p "$tmp/w"
	timeout 10 "$syncd" -f -o listen=0.0.0.0:0 "$tmp/w" 2>"$work/w.err" || rc=$?
	[ "$rc" -ne 124 ] || die "listen=0.0.0.0:0 without passwd= started"
	[ "$rc" -ne 0 ] || die "listen=0.0.0.0:0 without passwd=: exit status 0"
	grep -Eiq 'passw|auth' "$work/w.err" ||
		die "the refusal does not name the reason: $(cat "$work/w.err")"
	case_syncd_start w "listen=0.0.0.0:0,passwd=$pw"
	expect_status 401 GET "${syncd_url[w]}" /
	expect_status 200 GET "${syncd_url[w]}" / -u 'bob:hunter2'
	syncd_stop w
}
run_case t_wildcard "listen=0.0.0.0 requires passwd="

# HTTPS: a self-signed certificate (curl --cacert), with authentication;
# curl without the CA refuses it; plain HTTP to the port gets no 200.
t_tls() {
	local rc=0

	need openssl openssl
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
		-addext subjectAltName=IP:127.0.0.1 \
		-keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>"$work/openssl.err" ||
		die "openssl: $(cat "$work/openssl.err")"
	case_syncd_start tls "listen=127.0.0.1:0,passwd=$pw,tls_cert=$tmp/cert.pem,tls_key=$tmp/key.pem"
	T=${syncd_url[tls]}
	[[ $T == https://127.0.0.1:* ]] || die "the TLS listener says $T, not https://"
	curl_auth=(--cacert "$tmp/cert.pem")
	expect_status 401 GET "$T" /
	expect_status 200 GET "$T" / -u 'bob:hunter2'
	jq -e 'has("version")' "$work/reply" >/dev/null || die "GET /: $(cat "$work/reply")"
	expect_status 201 PUT "$T" /tlsdb -u 'bob:hunter2'
	curl_auth=()
	peer_curl "$T" / -u 'bob:hunter2' -o /dev/null 2>/dev/null || rc=$?
	[ "$rc" -eq 60 ] || [ "$rc" -eq 35 ] ||
		die "curl without the CA: exit $rc, expected a certificate error (60)"
	st=$(peer_curl "http://${T#https://}" / -o /dev/null -w '%{http_code}' \
		--max-time 5 2>/dev/null) || true
	[ "$st" != 200 ] || die "plain HTTP on the TLS port answered 200"
	syncd_stop tls
}
run_case t_tls "HTTPS with a self-signed certificate"

t_start_plain() {
	syncd_start plain listen=127.0.0.1:0
}
run_step t_start_plain "barrel-syncd starts on loopback without passwd="
L=${syncd_url[plain]:-}

# raw PEER FILE: FILE's bytes sent over a new connection to PEER's port,
# then its reply read for at most 2 s; the status line on stdout (empty
# when the server closed without one).
raw() {
	local port=${1##*:}

	timeout 5 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		cat "$2" >&3 2>/dev/null
		timeout 2 head -c 65536 <&3
		exit 0' _ "$port" "$2" >"$work/raw.out" 2>/dev/null || true
	head -n 1 "$work/raw.out" | tr -d '\r'
}

# cut PEER FILE: FILE's bytes sent, then the connection closed at once
# (a request cut short).
cut() {
	local port=${1##*:}

	timeout 5 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		cat "$2" >&3 2>/dev/null
		exec 3>&-' _ "$port" "$2" 2>/dev/null || true
}

# still_up PEER [CURL-ARGS]: GET / answers 200.
still_up() {
	local p=$1

	shift
	expect_status 200 GET "$p" / "$@"
}

# Malformed requests on the wire: none kills the daemon or gets a 2xx.
t_malformed_wire() {
	printf '\x00\xff\xfe garbage \x01\x02\r\n\r\n' >"$work/m1"
	printf 'GET / HTTP/1.1\r\n\r\n' >"$work/m2"                 # no Host
	printf 'BREW /pot HTCPCP/1.0\r\nHost: x\r\n\r\n' >"$work/m3"
	printf 'GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n' >"$work/m4"
	{ printf 'GET / HTTP/1.1\r\nHost: x\r\nX-Big: '
	  head -c 300000 /dev/zero | tr '\0' a
	  printf '\r\nConnection: close\r\n\r\n'; } >"$work/m5"       # oversized header
	{ printf 'GET /'; head -c 200000 /dev/zero | tr '\0' a
	  printf ' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'; } >"$work/m6"
	printf 'PUT /mal HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\nConnection: close\r\n\r\n' >"$work/m7"
	printf 'PUT /mal HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\nConnection: close\r\n\r\n' >"$work/m8"
	printf 'POST /mal/_bulk_docs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n' >"$work/m9"
	printf 'GET /../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >"$work/m10"
	printf 'GET /%%2e%%2e/%%2e%%2e/etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >"$work/m11"
	printf 'GET /mal/%%00x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >"$work/m12"
	printf 'GET /%%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >"$work/m13"
	printf 'PUT /mal HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\nConnection: close\r\n\r\n{' >"$work/m14"
	for i in $(seq 1 14); do
		line=$(raw "$L" "$work/m$i")
		case $line in
		"HTTP/1."[01]" 2"*) die "malformed request m$i got: $line" ;;
		esac
		echo "m$i: ${line:-(closed)}"
		still_up "$L"
	done
	! grep -q 'root:' "$work/raw.out" || die "path traversal served /etc/passwd"
	# Requests cut short: in the headers, in a body, in a chunk.
	printf 'PUT /mal/doc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"a": ' >"$work/c1"
	printf 'POST /mal/_bulk_docs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n{"docs"' >"$work/c2"
	printf 'GET / HTTP/1.1\r\nHost: ' >"$work/c3"
	for i in 1 2 3; do
		cut "$L" "$work/c$i"
		still_up "$L"
	done
	# The same against the authenticating listener, before any password.
	for i in 1 2 5 7 8 14; do
		raw "${syncd_url[auth]}" "$work/m$i" >/dev/null
	done
	cut "${syncd_url[auth]}" "$work/c1"
	still_up "${syncd_url[auth]}" -u 'bob:hunter2'
}
run_case t_malformed_wire "malformed requests on the wire leave it serving"

# refused METHOD PEER PATH [CURL-ARGS...]: a bulk request with a bad item:
# 400, or (as CouchDB answers some) a 2xx whose body has an error for it.
refused() {
	local st

	st=$(call "$@") || st="curl exit $?"
	case $st in
	400) ;;
	2??) jq -e '[.. | objects | select(has("error"))] | length > 0' \
		"$work/reply" >/dev/null 2>&1 ||
		die "expected an error: $(what_failed "$st")" ;;
	*) die "expected 400 or a per-item error: $(what_failed "$st")" ;;
	esac
}

# Malformed bodies and arguments through HTTP: CouchDB's 400 bad_request
# (per item for bulk requests; 404/409 where CouchDB has them), never a
# success, never a dead daemon, nothing written.
t_malformed_json() {
	local j='Content-Type: application/json'

	expect_status 201 PUT "$L" /mal
	expect_status 400 PUT "$L" /mal/doc -H "$j" --data-binary '{"a": '
	jq -e '.error == "bad_request"' "$work/reply" >/dev/null ||
		die "bad JSON: not CouchDB's bad_request: $(cat "$work/reply")"
	expect_status 400 PUT "$L" /mal/doc -H "$j" --data-binary '[1, 2]'
	expect_status 400 PUT "$L" /mal/doc -H "$j" --data-binary '"str"'
	expect_status 400 PUT "$L" /mal/doc -H "$j" --data-binary $'{"a": "\xff\xfe"}'
	expect_status 400 PUT "$L" /mal/doc -H "$j" --data-binary '{"_rev": "garbage"}'
	expect_status '400|409' PUT "$L" /mal/doc -H "$j" --data-binary '{"_rev": "1-zz"}'
	expect_status 400 PUT "$L" /mal/doc -H "$j" --data-binary '{"_unknown_field": 1}'
	expect_status 400 POST "$L" /mal/_bulk_docs -H "$j" --data-binary '{"docs": 5}'
	refused POST "$L" /mal/_bulk_docs -H "$j" --data-binary '{"docs": [1, "x"], "new_edits": false}'
	refused POST "$L" /mal/_bulk_docs -H "$j" \
		--data-binary '{"new_edits": false, "docs": [{"_id": "x"}]}'
	refused POST "$L" /mal/_bulk_docs -H "$j" \
		--data-binary '{"new_edits": false, "docs": [{"_id": "x", "_rev": "2-aa", "_revisions": {"start": 2, "ids": 7}}]}'
	expect_status 400 POST "$L" /mal/_revs_diff -H "$j" --data-binary '[1, 2]'
	expect_status 400 POST "$L" /mal/_revs_diff -H "$j" --data-binary '{"a": "1-x"}'
	refused POST "$L" /mal/_bulk_get -H "$j" --data-binary '{"docs": [{"rev": "1-x"}]}'
	expect_status 400 POST "$L" /mal/_bulk_get -H "$j" --data-binary 'null'
	expect_status 400 GET "$L" '/mal/_changes?since=banana&limit=-3'
	expect_status '400|404' GET "$L" '/mal/doc?open_revs=notjson' -H 'Accept: application/json'
	expect_status 400 PUT "$L" /BadName
	expect_status '400|404|405' PUT "$L" /mal/_local -H "$j" --data-binary '{}'
	expect_status '400|404|405' PUT "$L" /mal/_nonsense -H "$j" --data-binary '{}'
	head -c 100000 /dev/zero | tr '\0' '[' >"$work/deep.json"
	expect_status 400 PUT "$L" /mal/deep -H "$j" --data-binary @"$work/deep.json"
	expect_status 400 POST "$L" /mal/_bulk_docs -H "$j" --data-binary @"$work/deep.json"
	still_up "$L"
	expect_status 404 GET "$L" /mal/doc
	expect_status 404 GET "$L" /mal/x
	expect_status 200 GET "$L" /mal
	jq -e '.doc_count == 0' "$work/reply" >/dev/null ||
		die "a malformed request wrote a document: $(cat "$work/reply")"
}
run_case t_malformed_json "malformed bodies get 400 and write nothing"

# Many idle connections do not keep a request from being served.
t_idle_connections() {
	local port=${L##*:} fds=() i

	for i in $(seq 1 40); do
		exec {fd}<>"/dev/tcp/127.0.0.1/$port" || die "connection $i refused"
		fds+=("$fd")
		printf 'GET / HTTP/1.1\r\nHost: x\r\n' >&"$fd"   # never finished
	done
	still_up "$L" --max-time 10
	for fd in "${fds[@]}"; do
		exec {fd}>&-
	done
	still_up "$L"
}
run_case t_idle_connections "idle half-sent requests do not block others"

# Each daemon stops cleanly on SIGTERM after all this.
t_stop() {
	syncd_stop plain && syncd_stop auth
}
run_step t_stop "barrel-syncd stops cleanly on SIGTERM"

sync_done
