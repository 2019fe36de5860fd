namespace Qcow2Actors.Nbd;
