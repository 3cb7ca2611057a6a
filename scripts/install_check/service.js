// The install check's Node.js service (run from a fresh npm project that
// installed the npm package from dist/): df:install_node calls the Python
// service through the hub and adds its own step.
'use strict';

const { Reactor } = require('packetflow');

async function main(hub) {
  const r = new Reactor({ name: 'install-node' });
  r.register('df', 'install_node', async (text, ctx) => {
    const inner = await ctx.call('df', 'install_python', text);
    return { text: `${inner.text}!`, path: ['node', ...inner.path] };
  });
  await r.connect(hub);
  process.stdout.write('ready\n');
  // Serve until the check closes our stdin.
  process.stdin.on('end', () => r.stop());
  process.stdin.resume();
}

main(process.argv[2]).catch((e) => {
  console.error(e);
  process.exit(1);
});
