namespace Qcow2Actors.Format;
