#!/bin/sh
# The HTTP API against real clients nobody here wrote: the official openai and @mistralai/mistralai npm packages (TAP).
# npm installs them once into $top_builddir/npm-clients (or $NPM_CLIENTS_DIR); where it cannot, the test is skipped.
set -u
: "${srcdir:=.}" "${MISTRALD:=./mistrald}" "${MISTRAL_RUN:=./mistral-run}" "${top_builddir:=.}"
model="$srcdir/tests/data/stories260K.gguf"
clients="${NPM_CLIENTS_DIR:-$top_builddir/npm-clients}"
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/mistrald-npm.XXXXXX") || exit 1
dpid=
script=

cleanup() {
	[ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
	[ -n "$script" ] && rm -f "$script"
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

skip_all() { echo "1..0 # SKIP $*"; exit 0; }

for f in "$MISTRALD" "$MISTRAL_RUN"; do
	[ -x "$f" ] || skip_all "$f not built"
done
command -v node >/dev/null 2>&1 || skip_all "npm cannot install the SDKs: no node"
command -v npm >/dev/null 2>&1 || skip_all "npm cannot install the SDKs: no npm"
# The current SDKs support Node 20 and later; Debian 12's nodejs is 18, for
# which the last majors that support it are taken (the same calls).
if [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ]; then
	sdks="openai @mistralai/mistralai"
else
	sdks="openai@4 @mistralai/mistralai@1"
fi
if [ ! -f "$clients/node_modules/openai/package.json" ] ||
   [ ! -f "$clients/node_modules/@mistralai/mistralai/package.json" ]; then
	mkdir -p "$clients"
	# shellcheck disable=SC2086
	if ! timeout 600 npm install --prefix "$clients" --no-audit --no-fund --no-save --loglevel=error \
		$sdks >"$tmp/npm.log" 2>&1; then
		why=$(grep -m 1 -E '^npm (ERR!|error) (code|errno|network)' "$tmp/npm.log" || tail -n 1 "$tmp/npm.log")
		skip_all "npm cannot install openai and @mistralai/mistralai: $why"
	fi
fi
echo "# openai $(node -p "require('$clients/node_modules/openai/package.json').version")," \
	"@mistralai/mistralai $(node -p "require('$clients/node_modules/@mistralai/mistralai/package.json').version")," \
	"node $(node --version)"

# the reference text: greedy, raw, 64 tokens
golden=$(timeout 60 "$MISTRAL_RUN" -m "$model" --raw -p "Once upon a time" -n 64 --temperature 0 -t 2 2>/dev/null)

port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
"$MISTRALD" --config /dev/null --model "$model" --socket "$tmp/s.sock" --threads 2 \
	--http-listen "127.0.0.1:$port" 2>"$tmp/daemon.log" &
dpid=$!
i=0
until [ "$(node -e "fetch('http://127.0.0.1:$port/health').then(r => console.log(r.status), () => console.log(0))")" = 200 ]; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$dpid" 2>/dev/null; then
		echo "Bail out! mistrald did not become ready: $(tail -n 5 "$tmp/daemon.log")"
		exit 1
	fi
	sleep 0.1
done

# ES modules resolve packages from their own directory: the script goes next to node_modules.
script="$clients/mistrald-test-$$.mjs"
cat >"$script" <<'EOF'
import OpenAI from 'openai';
import { Mistral } from '@mistralai/mistralai';

const base = `http://127.0.0.1:${process.env.PORT}`;
const golden = process.env.GOLDEN;
let n = 0, failed = 0;

function ok(cond, desc, why) {
	n++;
	console.log(`${cond ? 'ok' : 'not ok'} ${n} - ${desc}`);
	if (!cond) {
		failed++;
		if (why !== undefined)
			console.log('# ' + String(why).slice(0, 2000).replace(/\n/g, '\n# '));
	}
}

async function step(desc, fn) {
	try {
		await fn();
	} catch (e) {
		ok(false, `${desc}: ${e && e.constructor ? e.constructor.name : 'error'}`, e && (e.stack || e));
	}
}

const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
const messages = [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: 'Tell me about a cat.' }];
let model = null, chatText = null;

await step('openai models.list', async () => {
	const list = await openai.models.list();
	model = list.data[0]?.id;
	ok(list.data.length === 1 && typeof model === 'string', `openai: models.list names the served model (${model})`,
	   JSON.stringify(list.data));
});
await step('openai chat', async () => {
	const r = await openai.chat.completions.create({ model, messages, max_tokens: 32, temperature: 0 });
	chatText = r.choices[0].message.content;
	ok(r.object === 'chat.completion' && r.choices[0].message.role === 'assistant' && chatText.length > 0 &&
	   ['stop', 'length'].includes(r.choices[0].finish_reason) && r.usage.completion_tokens > 0,
	   'openai: chat.completions.create answers', JSON.stringify(r));
});
await step('openai chat stream', async () => {
	const s = await openai.chat.completions.create({ model, messages, max_tokens: 32, temperature: 0, stream: true,
							 stream_options: { include_usage: true } });
	let text = '', role = null, finish = null, usage = null, chunks = 0;
	for await (const ch of s) {
		chunks++;
		if (ch.usage)
			usage = ch.usage;
		const c = ch.choices[0];
		if (!c)
			continue;
		role = role ?? c.delta.role ?? null;
		text += c.delta.content ?? '';
		finish = c.finish_reason ?? finish;
	}
	ok(text === chatText && role === 'assistant' && finish && usage && usage.completion_tokens > 0 && chunks > 2,
	   'openai: a streamed chat is the same text, with role, finish_reason and usage',
	   JSON.stringify({ text, chatText, role, finish, usage, chunks }));
});
await step('openai completions', async () => {
	const c = await openai.completions.create({ model, prompt: 'Once upon a time', max_tokens: 64, temperature: 0 });
	ok(c.choices[0].text === golden && c.choices[0].finish_reason === 'length',
	   'openai: completions.create gives the greedy reference text', JSON.stringify(c));
});
await step('openai completions stream', async () => {
	const s = await openai.completions.create({ model, prompt: 'Once upon a time', max_tokens: 64, temperature: 0,
						    stream: true });
	let text = '';
	for await (const ch of s)
		text += ch.choices[0]?.text ?? '';
	ok(text === golden, 'openai: a streamed completion gives the same text', JSON.stringify(text));
});
await step('openai 404', async () => {
	try {
		await openai.chat.completions.create({ model: 'no-such-model', messages });
		ok(false, 'openai: another model name is refused');
	} catch (e) {
		ok(e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found',
		   'openai: another model name raises NotFoundError (404, model_not_found)', e);
	}
});
await step('openai 400', async () => {
	try {
		await openai.chat.completions.create({ model, messages, temperature: 'hot' });
		ok(false, 'openai: a wrong type is refused');
	} catch (e) {
		ok(e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'temperature',
		   'openai: a wrong type raises BadRequestError naming the param', e);
	}
});

const mistral = new Mistral({ apiKey: 'unused', serverURL: base });
await step('mistral chat.complete', async () => {
	const r = await mistral.chat.complete({ model, messages, maxTokens: 32, temperature: 0 });
	ok(r.choices[0].message.content === chatText && r.usage.completionTokens > 0,
	   'mistral: chat.complete gives the same text as openai', JSON.stringify(r));
});
await step('mistral chat.stream', async () => {
	const s = await mistral.chat.stream({ model, messages, maxTokens: 32, temperature: 0 });
	let text = '', finish = null;
	for await (const ev of s) {
		const c = ev.data.choices[0];
		text += c?.delta?.content ?? '';
		finish = c?.finishReason ?? finish;
	}
	ok(text === chatText && finish, 'mistral: chat.stream gives the same text and a finish reason',
	   JSON.stringify({ text, finish }));
});
await step('mistral seed', async () => {
	const a = await mistral.chat.complete({ model, messages, maxTokens: 16, temperature: 1, randomSeed: 7 });
	const b = await mistral.chat.complete({ model, messages, maxTokens: 16, temperature: 1, randomSeed: 7 });
	ok(a.choices[0].message.content === b.choices[0].message.content, 'mistral: randomSeed makes sampling repeatable',
	   JSON.stringify([a, b]));
});
await step('mistral 404', async () => {
	try {
		await mistral.chat.complete({ model: 'no-such-model', messages });
		ok(false, 'mistral: another model name is refused');
	} catch (e) {
		ok(e.statusCode === 404 && /no-such-model/.test(e.body ?? e.message), 'mistral: another model name is a 404', e);
	}
});
console.log(`1..${n}`);
process.exit(failed ? 1 : 0);
EOF
cd "$clients" && PORT=$port GOLDEN=$golden timeout 120 node "$script"
status=$?
if ! kill -0 "$dpid" 2>/dev/null; then
	echo "Bail out! mistrald died: $(tail -n 5 "$tmp/daemon.log")"
	exit 1
fi
exit $status
