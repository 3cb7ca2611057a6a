// ES module entry: the same objects as `require('packetflow')`.
import packetflow from './index.js';

export const { Reactor, PacketFlowError, Context, ActorContext, Actors } = packetflow;
export default packetflow;
