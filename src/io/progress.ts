// The event type lives in oci/ beside the destination interface that carries it.
export { noProgress, type ProgressEvent, type ProgressListener } from '../oci/progress-event.js';
