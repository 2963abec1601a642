#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>
int main(int argc,char**argv){
  int neps=atoi(argv[1]); int n=atoi(argv[2]);
  int a=socket(AF_INET,SOCK_DGRAM,0), b=socket(AF_INET,SOCK_DGRAM,0);
  struct sockaddr_in sa={0}; sa.sin_family=AF_INET; sa.sin_addr.s_addr=htonl(0x7f000001);
  bind(a,(void*)&sa,sizeof sa); bind(b,(void*)&sa,sizeof sa);
  socklen_t l=sizeof sa; struct sockaddr_in bb; getsockname(b,(void*)&bb,&l);
  int sz=8<<20; setsockopt(b,SOL_SOCKET,SO_RCVBUF,&sz,sizeof sz);
  for(int i=0;i<neps;i++){int ep=epoll_create1(0); struct epoll_event e={.events=EPOLLIN|(argc>3?EPOLLEXCLUSIVE:0)}; epoll_ctl(ep,EPOLL_CTL_ADD,a,&e);}
  char buf[400]={0}; char rb[2000];
  struct timespec t0,t1; clock_gettime(CLOCK_MONOTONIC,&t0);
  for(int i=0;i<n;i++){ sendto(a,buf,sizeof buf,0,(void*)&bb,sizeof bb); if((i&63)==63) for(int j=0;j<64;j++) recv(b,rb,sizeof rb,0);}
  clock_gettime(CLOCK_MONOTONIC,&t1);
  printf("eps=%d %.3f us/send(+recv)\n",neps,((t1.tv_sec-t0.tv_sec)*1e9+(t1.tv_nsec-t0.tv_nsec))/1e3/n);
}
