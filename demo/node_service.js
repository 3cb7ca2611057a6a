// The demo's Node.js service: a tiny translator, the middle step of the
// demo's cf:seq pipeline (a mood in, ballots out), and the seed's counter
// actor.
'use strict';

const { Reactor } = require(process.env.PACKETFLOW_NODE || 'packetflow');

const WORDS = { hello: 'bonjour', good: 'bon', morning: 'matin', world: 'monde', thanks: 'merci' };

async function main(hub) {
  const r = new Reactor({ name: 'node-service' });
  r.register('df', 'translate', (text) => ({
    text: text.split(/\s+/).map((w) => WORDS[w.toLowerCase()] || w).join(' '),
    served_by: 'node',
  }));
  // Two judges side with the mood, one stays neutral; `served_by` carries
  // on the trail of the pipeline's steps.
  r.register('df', 'ballots', (mood) => ({
    ballots: [mood.label, mood.label, 'neutral'],
    served_by: [mood.served_by, 'node'],
  }));
  r.actors.registerBehavior('counter', {
    increment: (data, context) => { context.state.value++; return { value: context.state.value, served_by: 'node' }; },
    get_value: (data, context) => ({ value: context.state.value, served_by: 'node' }),
  }, { initialState: { value: 0 } });
  await r.connect(hub);
  process.stdout.write('ready\n');
  process.stdin.on('end', () => r.stop());
  process.stdin.resume();
}

main(process.argv[2]).catch((e) => { console.error(e); process.exit(1); });
